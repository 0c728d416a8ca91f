"""Session state stores, one per region: where a user's live session state is kept."""
