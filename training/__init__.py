"""Training: hourly panels, forecasters (baselines and the LSTM), metrics and the backtest."""
