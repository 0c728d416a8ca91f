"""The one typed settings object of prewarm.

Every path, URI, threshold and seed the code reads comes from here. Each field can be
overridden from the environment with the ``PREWARM_`` prefix; nested sections use ``__``
(for example ``PREWARM_LATENCY__ROUTE_INFLATION=1.8``).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PACKAGED_REGIONS_FILE = Path(__file__).with_name("data") / "regions.csv"
CHECKOUT_DAGS_FOLDER = Path(__file__).resolve().parents[1] / "dags"


class LatencySettings(BaseModel):
    """Parameters of the physical latency model (see ``core.latency``)."""

    fibre_km_per_ms: float = Field(200.0, gt=0, description="Signal speed in fibre, km per ms.")
    route_inflation: float = Field(
        1.6, ge=1.0, description="Real routes are longer than the great circle (1.5-2x)."
    )
    last_mile_ms: float = Field(6.0, ge=0, description="Access-network round trip (Wi-Fi, DSL).")
    jitter_ms: float = Field(2.0, ge=0, description="Scale of the random per-probe jitter.")
    congestion_ms: float = Field(
        4.0, ge=0, description="Queueing delay at 50% region utilisation; grows as u/(1-u)."
    )
    max_utilisation: float = Field(
        0.98, gt=0, lt=1, description="Utilisation is clipped here so the queue term stays finite."
    )


class RegionLoadSettings(BaseModel):
    """How real machine-usage traces become each region's background load (``core.region_load``)."""

    mean_low: float = Field(
        0.35, ge=0, lt=1, description="Lowest mean share of a region's capacity used by others."
    )
    mean_high: float = Field(
        0.7, ge=0, lt=1, description="Highest mean share of a region's capacity used by others."
    )
    swing: float = Field(
        0.1, ge=0, description="Standard deviation of the load around a region's mean."
    )
    ceiling: float = Field(
        0.95, gt=0, lt=1, description="Background load never exceeds this share of capacity."
    )
    peak_local_hour: float = Field(
        14.0, ge=0, lt=24, description="Local hour at which each trace's daily peak is placed."
    )


class SimulationSettings(BaseModel):
    """Defaults of the world simulator."""

    start: str = Field("2026-01-05", description="First simulated day (UTC), YYYY-MM-DD.")
    interval_minutes: int = Field(5, ge=1, le=60, description="Telemetry interval.")
    gps_share: float = Field(
        0.7, ge=0, le=1, description="Share of users whose clients report GPS; the rest give IP."
    )
    ip_pool_size: int = Field(
        60_000, ge=1_000, description="Random IPv4 addresses geolocated to build the IP pool."
    )
    min_city_population: int = Field(
        500_000, ge=0, description="Cities smaller than this are not used as homes or destinations."
    )
    continent_weights: dict[str, float] = Field(
        {"NA": 0.32, "EU": 0.30, "AS": 0.24, "SA": 0.06, "OC": 0.04, "AF": 0.04},
        description="Share of users living on each continent (geonames codes); within a "
        "continent, home cities are drawn by population.",
    )
    traveller_share: float | None = Field(
        None, ge=0, le=1, description="Share of users who travel; None: each role's own propensity."
    )
    personal_sigma: float = Field(
        0.35, ge=0, description="Lognormal sigma of each user's personal demand multipliers."
    )
    drift_per_month_sd: float = Field(
        0.1, ge=0, description="Spread of each user's slow demand trend (log-change per month)."
    )
    gps_error_m: tuple[float, float] = Field(
        (10.0, 50.0), description="Range of a GPS fix's error radius in metres."
    )
    max_cpu_cores: float = Field(
        64.0, gt=0, description="Most CPU cores one user can get from a region."
    )
    max_ram_gb: float = Field(
        256.0, gt=0, description="Most memory one user can get from a region."
    )
    block_users: int = Field(
        125, ge=1, description="Users simulated together in one block (one Parquet part each)."
    )
    cached_blocks: int = Field(
        2, ge=1, description="Simulated user blocks a World keeps in memory."
    )


class GwaSettings(BaseModel):
    """Assumptions of the GWA-T-12 (Bitbrains) importer; the trace does not record these."""

    io_size_kib: float = Field(
        32.0, gt=0, description="Assumed average I/O size used to turn disk KB/s into IOPS."
    )
    kb_bytes: int = Field(1024, description="Bytes in one 'KB' of the trace (the archive: KiB).")
    serving_region: str = Field(
        "azure-westeurope",
        description="Region standing for Bitbrains' Amsterdam data centres.",
    )
    user_prefix: str = Field("gwa-vm-", description="Prefix of the user id given to each VM.")
    vm_id_digits: int = Field(
        4, ge=1, description="The VM id in the user id is zero-padded to this many digits."
    )
    interval_seconds: int = Field(
        300, gt=0, description="The trace's nominal sampling step; turns IOPS into a count."
    )
    vms_per_part: int = Field(
        25, ge=1, description="VMs written per Parquet part file of the imported dataset."
    )


class FeatureSettings(BaseModel):
    """Parameters of the hourly feature aggregation (see ``features.aggregate``)."""

    travel_threshold_km: float = Field(
        100.0, gt=0, description="A user farther than this from home counts as travelling."
    )
    home_grid_deg: float = Field(
        0.25, gt=0, description="Grid (degrees) on which positions are binned to find home."
    )
    night_start_hour: int = Field(
        0, ge=0, le=23, description="Local solar hour at which night (time at home) begins."
    )
    night_end_hour: int = Field(
        6, ge=1, le=24, description="Local solar hour at which night ends (exclusive)."
    )


class FeastSettings(BaseModel):
    """The Feast feature store: project, online store and freshness (see ``features.store``)."""

    project: str = Field(
        "prewarm",
        pattern=r"^[A-Za-z0-9_]+$",
        description="Feast project name; also the suffix of every Redis key it writes.",
    )
    online_store: Literal["sqlite", "redis"] = Field(
        "sqlite", description="Online store: SQLite under PREWARM_HOME, or Redis."
    )
    redis_connection_string: str = Field(
        "127.0.0.1:6379", description="Redis 'host:port[,db=N]' used when online_store=redis."
    )
    redis_key_ttl_seconds: int | None = Field(
        None, ge=1, description="Expiry of online Redis keys; None keeps them until overwritten."
    )
    hourly_ttl_hours: int = Field(
        6, ge=1, description="How old an hourly aggregate may be and still be served or joined."
    )
    region_ttl_hours: int = Field(
        2, ge=1, description="How old a region status may be and still be served or joined."
    )
    feedback_ttl_hours: int = Field(
        24, ge=1, description="How old a router feedback record may be and still be served."
    )


class ValidationSettings(BaseModel):
    """Thresholds of the telemetry validation gate (see ``features.validation``)."""

    max_bad_fraction: float = Field(
        0.05, ge=0, le=1, description="Above this share of bad rows the whole batch is rejected."
    )
    future_tolerance_minutes: float = Field(
        10.0, ge=0, description="Clock skew allowed before a timestamp counts as in the future."
    )
    max_user_cpu_cores: float = Field(
        128.0, gt=0, description="More CPU cores than this for one user is implausible."
    )
    max_user_ram_gb: float = Field(
        1024.0, gt=0, description="More memory (GiB) than this for one user is implausible."
    )
    max_latency_ms: float = Field(
        10_000.0, gt=0, description="A measured round trip above this is a measurement error."
    )


class LstmSettings(BaseModel):
    """The LSTM forecaster: window shape, network size and training (see ``training.lstm``)."""

    encoder_length: int = Field(168, ge=24, description="Hours of history the encoder reads (L).")
    horizon: int = Field(24, ge=1, description="Hours forecast directly at once (H).")
    hidden_size: int = Field(64, ge=1, description="Hidden units of each LSTM layer.")
    num_layers: int = Field(2, ge=1, description="Stacked LSTM layers.")
    patch_hours: int = Field(
        8, ge=1, description="Hours the LSTM reads per step; must divide encoder_length."
    )
    head_hidden_size: int = Field(128, ge=1, description="Hidden units of the per-step heads.")
    embedding_dim: int = Field(8, ge=1, description="Size of the calendar/role/region embeddings.")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout between layers while training.")
    learning_rate: float = Field(3e-3, gt=0, description="AdamW learning rate.")
    weight_decay: float = Field(1e-4, ge=0, description="AdamW weight decay.")
    batch_size: int = Field(256, ge=1, description="Windows per training batch.")
    samples_per_epoch: int = Field(
        20_000, ge=1, description="Training windows drawn (with replacement) per epoch."
    )
    max_epochs: int = Field(
        6, ge=1, description="Training epochs; the learning rate anneals to zero over them."
    )
    patience: int = Field(4, ge=1, description="Epochs without validation gain before stopping.")
    validation_hours: int = Field(
        72, ge=1, description="Last hours of history held out for early stopping and calibration."
    )
    validation_windows: int = Field(
        20_000, ge=1, description="Validation (and calibration) windows used at most per fit."
    )
    gradient_clip: float = Field(1.0, gt=0, description="Gradient norm clipping while training.")
    region_loss_weight: float = Field(
        1.0, ge=0, description="Weight of the region cross-entropy next to the pinball loss."
    )
    quantiles: tuple[float, ...] = Field(
        (0.5, 0.9), description="Quantiles forecast per resource; must include 0.5 and 0.9."
    )
    zero_snap: float = Field(
        0.05,
        ge=0,
        description="A forecast below this fraction of its series' scale (the seasonal naive's "
        "in-sample MAE) is set to exactly 0: idle and powered-off hours are exact zeros.",
    )
    seed: int = Field(42, description="Seed of weights, window sampling and dropout.")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes.")
    threads: int = Field(
        1,
        ge=1,
        description="Torch CPU threads to fit and predict with; on a shared 2-core machine two "
        "OpenMP threads measured 2-5x slower than one.",
    )


class BacktestSettings(BaseModel):
    """The hourly panel, the baseline forecasters and the backtest (see ``training.backtest``)."""

    users_per_batch: int = Field(
        250, ge=1, description="Users aggregated at once when building an hourly panel from disk."
    )
    ets_window_hours: int = Field(
        168, ge=48, description="Latest hours of history each AutoETS fit sees; bounds run time."
    )
    ets_workers: int = Field(2, ge=1, description="Processes fitting AutoETS series in parallel.")
    ets_explosion_factor: float = Field(
        10.0,
        gt=1,
        description="An ETS forecast above this multiple of its series' history maximum is "
        "reported as exploded (and kept as it is).",
    )
    lightgbm_train_hours: int = Field(
        1344, ge=24, description="Hours before the origin whose forecast origins train LightGBM."
    )
    lightgbm_origin_stride: int = Field(
        2, ge=1, description="Every n-th hour of that window is a training forecast origin."
    )
    lightgbm_max_rows: int = Field(
        250_000, ge=1_000, description="Training rows kept (a seeded random sample) at most."
    )
    lightgbm_rounds: int = Field(150, ge=1, description="Boosting rounds of each LightGBM model.")
    lightgbm_learning_rate: float = Field(0.1, gt=0, description="LightGBM learning rate.")
    lightgbm_num_leaves: int = Field(63, ge=2, description="Leaves per LightGBM tree.")
    lightgbm_min_child_samples: int = Field(
        200, ge=1, description="Fewest training rows in a LightGBM leaf."
    )
    lightgbm_threads: int = Field(1, ge=1, description="Threads LightGBM trains and predicts with.")
    lightgbm_zero_below: float = Field(
        0.01,
        ge=0,
        description="A LightGBM p50 below this fraction of its series' training mean is set to "
        "exactly 0: idle and powered-off hours are exact zeros, which the trees only approach.",
    )


class MlflowSettings(BaseModel):
    """MLflow tracking and the model registry (see ``training.registry``)."""

    tracking_uri: str | None = Field(
        None,
        description="Tracking/registry URI; None means sqlite:///$PREWARM_HOME/mlflow/mlflow.db.",
    )
    experiment: str = Field("prewarm-training", description="Experiment of the training runs.")
    model_name: str = Field("prewarm-profile", description="Registered model name.")
    promotion_margin: float = Field(
        0.02,
        ge=0,
        lt=1,
        description="A challenger must beat the champion's holdout MASE by this relative margin.",
    )
    window_days: int = Field(
        28, ge=2, description="Days of history (the latest) a training run builds its panel from."
    )
    plot_users: int = Field(
        3, ge=1, description="Users drawn in a training run's forecast-vs-actual figure."
    )


class DemoSettings(BaseModel):
    """Size of the world that `prewarm demo` simulates and runs through the DAGs."""

    users: int = Field(200, ge=1, description="Simulated users.")
    days: int = Field(14, ge=2, description="Simulated days of history.")
    seed: int = Field(42, description="Seed of the demo world.")


class Settings(BaseSettings):
    """Everything configurable in prewarm, in one place."""

    model_config = SettingsConfigDict(
        env_prefix="PREWARM_", env_nested_delimiter="__", extra="ignore"
    )

    home: Path = Field(
        Path("var"), description="Folder holding all state of the embedded default."
    )
    regions_file: Path = Field(
        PACKAGED_REGIONS_FILE, description="Region catalogue (CSV); edit or replace it."
    )
    seed: int = Field(42, description="Default seed for anything random.")
    latency_slo_ms: float = Field(
        60.0, gt=0, description="Round-trip latency above which a user-minute violates the SLO."
    )
    earliest_event: str = Field(
        "2000-01-01",
        description="Telemetry stamped before this date (UTC) is considered absurdly old.",
    )
    dags_folder: Path = Field(
        CHECKOUT_DAGS_FOLDER, description="The Airflow DAGs of prewarm (the checkout's dags/)."
    )
    demo: DemoSettings = DemoSettings()
    mlflow: MlflowSettings = MlflowSettings()
    latency: LatencySettings = LatencySettings()
    region_load: RegionLoadSettings = RegionLoadSettings()
    simulation: SimulationSettings = SimulationSettings()
    gwa: GwaSettings = GwaSettings()
    features: FeatureSettings = FeatureSettings()
    feast: FeastSettings = FeastSettings()
    validation: ValidationSettings = ValidationSettings()
    lstm: LstmSettings = LstmSettings()
    backtest: BacktestSettings = BacktestSettings()

    @property
    def cache_dir(self) -> Path:
        """Derived, re-creatable data (e.g. the geolocated IP pool)."""
        return self.home / "cache"

    @property
    def landing_dir(self) -> Path:
        """Where new telemetry batches arrive (Parquet files or dataset folders)."""
        return self.home / "landing"

    @property
    def airflow_home(self) -> Path:
        """AIRFLOW_HOME of the embedded default (SQLite metadata database, logs)."""
        return self.home / "airflow"

    @property
    def mlflow_tracking_uri(self) -> str:
        """Where MLflow tracks runs and registers models (SQLite under the home by default)."""
        if self.mlflow.tracking_uri:
            return self.mlflow.tracking_uri
        return f"sqlite:///{(self.home / 'mlflow' / 'mlflow.db').resolve()}"

    @property
    def ingest_dir(self) -> Path:
        """The ingest step's own records: accepted raw telemetry, quarantine, rejections."""
        return self.home / "ingest"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
