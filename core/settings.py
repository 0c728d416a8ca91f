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
    registry_url: str | None = Field(
        None,
        description="SQLAlchemy URL of a SQL registry (PostgreSQL in production), shared by "
        "every process; None: the file registry under PREWARM_HOME/feast.",
    )
    registry_cache_ttl_seconds: int = Field(
        60, ge=0, description="How long a process trusts its cached copy of the SQL registry."
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
    epochs: int | None = Field(
        None, ge=1, description="Epochs of the demo's nightly_retrain run; None: lstm.max_epochs."
    )
    eval_days: int = Field(
        14, ge=1, description="Days `prewarm evaluate` plays after its training range in the demo."
    )
    eval_policies: tuple[str, ...] | None = Field(
        None, description="Policies the demo evaluates; None: every policy prewarm evaluate knows."
    )
    probe_hours: float = Field(
        1.0, gt=0, description="Last hours of the world replayed to the router as client probes."
    )
    feedback_wait_seconds: float = Field(
        30.0,
        gt=0,
        description="Longest the demo waits for the router's feedback export after the probe "
        "replay (it exports every second in the demo); without one, feedback_collect is skipped.",
    )


class PredictSettings(BaseModel):
    """Batch prediction with the ``@champion`` model (see ``serving.predict``)."""

    shard_users: int = Field(
        500, ge=1, description="Users per batch-prediction shard (one mapped Airflow task each)."
    )
    max_feature_age_hours: float = Field(
        3.0, gt=0, description="Features older than this are stale: predictions fall back."
    )
    max_prediction_age_hours: float = Field(
        24.0, gt=0, description="The last good predictions may stand in for this long at most."
    )
    max_model_data_age_days: float = Field(
        30.0,
        gt=0,
        description="A champion whose training data ended longer than this before the newest "
        "features is stale: predictions fall back.",
    )
    feature_service: str = Field(
        "serving", description="Feast feature service the model's input windows are read through."
    )
    region_top_k: int = Field(
        3, ge=1, description="Most likely regions kept per user and forecast step."
    )
    reactive_hours: int = Field(
        24,
        ge=1,
        description="Hours of recent usage a reactive (fallback) profile is computed from.",
    )
    reactive_quantile: float = Field(
        0.95,
        gt=0.5,
        lt=1,
        description="Quantile of those hourly means a reactive profile gives as its p90 (a "
        "cautious stand-in: it sizes warm capacity).",
    )


class PlacementSettings(BaseModel):
    """The Resource Prediction Engine: region and allocation per user (``serving.placement``)."""

    current_usage_hours: int = Field(
        24,
        ge=1,
        description="A user without an active reservation is taken to hold the peak hourly p95 "
        "of these last hours (what a reactive autoscaler would have given them).",
    )

    allocation_quantile: Literal["p50", "p90"] = Field(
        "p90", description="Forecast quantile an allocation is sized at."
    )
    headroom: float = Field(
        0.15, ge=0, description="Extra share of the forecast quantile added to each allocation."
    )
    slo_penalty_usd_per_hour: float = Field(
        2.0, ge=0, description="Cost charged for one expected hour of SLO violation."
    )
    exact_max_users: int = Field(
        5_000, ge=1, description="Largest instance solved exactly with HiGHS; bigger: heuristic."
    )
    move_probability: float = Field(
        0.3,
        ge=0,
        le=1,
        description="A region other than the current one this likely is worth a pre-allocation.",
    )
    window_hours: int = Field(
        6, ge=1, description="Hours of the forecast horizon one placement decision covers."
    )
    latency_usd_per_ms_hour: float = Field(
        0.001,
        ge=0,
        description="Value of proximity: cost per ms of expected round trip per hour, so that "
        "of two regions alike in price and SLO the nearer one wins.",
    )
    switch_cost_usd: float = Field(
        0.5,
        ge=0,
        description="Charged for planning a user away from the current region (session move, "
        "overlap of holding both); damps moves made for small price differences.",
    )
    unplaced_penalty_usd_per_hour: float = Field(
        20.0,
        gt=0,
        description="Cost of leaving a user who needs more capacity without it; should exceed "
        "any real option, so that users go unplaced only when capacity forces it.",
    )
    solver: Literal["auto", "exact", "heuristic"] = Field(
        "auto", description="auto: HiGHS up to exact_max_users users per window, else heuristic."
    )
    exact_time_limit_s: float = Field(
        60.0, gt=0, description="Time limit of one HiGHS solve; then its best solution is used."
    )
    exact_mip_gap: float = Field(
        1e-4, ge=0, description="Relative gap to its lower bound at which HiGHS stops."
    )
    heuristic_passes: int = Field(
        8, ge=0, description="Improvement passes of the heuristic after its capacity repair."
    )
    heuristic_price_rounds: int = Field(
        10, ge=0, description="Lagrangian capacity-pricing rounds of the heuristic when it binds."
    )
    heuristic_target_gap: float = Field(
        0.001,
        ge=0,
        description="The heuristic stops pricing once its plan is proven this close (relative) "
        "to the optimum.",
    )
    heuristic_rescues: int = Field(
        500, ge=0, description="Unplaced users the heuristic tries to place by moving another."
    )
    polish_time_limit_s: float = Field(
        5.0,
        ge=0,
        description="HiGHS time for re-solving exactly the regions where the heuristic left "
        "users unplaced (at most exact_max_users users); 0 turns polishing off.",
    )


class ProvisioningSettings(BaseModel):
    """The Pre-Allocation Manager: ledger, provider, expiry, budget (``serving.provisioning``)."""

    provider: Literal["local", "aws"] = Field("local", description="Where warm resources live.")
    ledger_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the reservation ledger; None: SQLite under PREWARM_HOME.",
    )
    ttl_hours: float = Field(
        3.0, gt=0, description="A warm reservation not taken into use expires after this long."
    )
    budget_usd_per_hour: float = Field(
        50.0, ge=0, description="Cap on the hourly price of all warm reservations together."
    )
    region_budget_usd_per_hour: float = Field(
        10.0, ge=0, description="Cap on the hourly price of the warm reservations in one region."
    )
    warm_fraction: float = Field(
        0.25,
        gt=0,
        le=1,
        description="Share of the full allocation a warm reservation holds until it is used.",
    )
    local_cloud_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the local provider's simulated cloud; None: its own "
        "SQLite file under PREWARM_HOME/serving.",
    )
    cold_boot_seconds: float = Field(
        90.0,
        ge=0,
        description="Local provider: launch to ready of new capacity (a VM or container boots "
        "in 30-60 s, plus the application's own warm-up).",
    )
    scale_up_seconds: float = Field(
        20.0,
        ge=0,
        description="Local provider: resizing a warm reservation to its full allocation (the "
        "instance is already running; only the added capacity has to come up).",
    )
    lock_timeout_seconds: float = Field(
        30.0,
        gt=0,
        description="How long a SQLite ledger or local-cloud transaction waits for the lock.",
    )


class AwsPlacement(BaseModel):
    """Where the ``aws`` provider launches in one AWS region: the AMI, subnet and security group."""

    image_id: str = Field(description="AMI the warm instances boot (e.g. a current Amazon Linux).")
    subnet_id: str = Field(description="Subnet of each reservation's network interface and volume.")
    security_group_id: str = Field(description="Security group put on each network interface.")


class AwsInstanceType(BaseModel):
    """One EC2 instance type the provider may choose, with its size and on-demand price."""

    name: str = Field(description="EC2 instance type, e.g. 'm6i.large'.")
    vcpu: int = Field(gt=0, description="Default vCPUs.")
    memory_gib: float = Field(gt=0, description="Memory in GiB.")
    network_gbps: float = Field(
        gt=0, description="Baseline (sustained, not burst) network bandwidth in Gbps."
    )
    usd_per_hour: float = Field(gt=0, description="On-demand Linux price in us-east-1.")


def _instance_type_table() -> tuple[AwsInstanceType, ...]:
    """Current-generation x86 types: vCPU, GiB, baseline Gbps (DescribeInstanceTypes), USD/h."""
    rows = (
        ("t3.nano", 2, 0.5, 0.032, 0.0052),
        ("t3.micro", 2, 1, 0.064, 0.0104),
        ("t3.small", 2, 2, 0.128, 0.0208),
        ("t3.medium", 2, 4, 0.256, 0.0416),
        ("t3.large", 2, 8, 0.512, 0.0832),
        ("t3.xlarge", 4, 16, 1.024, 0.1664),
        ("t3.2xlarge", 8, 32, 2.048, 0.3328),
        ("c6i.large", 2, 4, 0.781, 0.085),
        ("c6i.xlarge", 4, 8, 1.562, 0.17),
        ("c6i.2xlarge", 8, 16, 3.125, 0.34),
        ("c6i.4xlarge", 16, 32, 6.25, 0.68),
        ("c6i.8xlarge", 32, 64, 12.5, 1.36),
        ("m6i.large", 2, 8, 0.781, 0.096),
        ("m6i.xlarge", 4, 16, 1.562, 0.192),
        ("m6i.2xlarge", 8, 32, 3.125, 0.384),
        ("m6i.4xlarge", 16, 64, 6.25, 0.768),
        ("m6i.8xlarge", 32, 128, 12.5, 1.536),
        ("m6i.16xlarge", 64, 256, 25, 3.072),
        ("r6i.large", 2, 16, 0.781, 0.126),
        ("r6i.xlarge", 4, 32, 1.562, 0.252),
        ("r6i.2xlarge", 8, 64, 3.125, 0.504),
        ("r6i.4xlarge", 16, 128, 6.25, 1.008),
        ("r6i.8xlarge", 32, 256, 12.5, 2.016),
        ("c6in.large", 2, 4, 3.125, 0.1134),
        ("c6in.xlarge", 4, 8, 6.25, 0.2268),
        ("c6in.2xlarge", 8, 16, 12.5, 0.4536),
        ("c6in.4xlarge", 16, 32, 25, 0.9072),
        ("c6in.8xlarge", 32, 64, 50, 1.8144),
        ("c6in.16xlarge", 64, 128, 100, 3.6288),
    )
    return tuple(
        AwsInstanceType(name=n, vcpu=c, memory_gib=m, network_gbps=g, usd_per_hour=p)
        for n, c, m, g, p in rows
    )


class AwsSettings(BaseModel):
    """The ``aws`` provider (boto3). Credentials come from the environment, never from here."""

    endpoint_url: str | None = Field(
        None, description="EC2 endpoint override (a moto server in tests); None: real AWS."
    )
    regions: tuple[str, ...] = Field(
        ("us-east-1", "eu-west-1"), description="AWS regions the provider may act in."
    )
    max_attempts: int = Field(
        8, ge=1, description="Most attempts per EC2 call, the first included (adaptive retries)."
    )
    placements: dict[str, AwsPlacement] = Field(
        default_factory=dict,
        description="AMI, subnet and security group per AWS region (JSON in the environment, "
        'e.g. {"eu-west-1": {"image_id": ..., "subnet_id": ..., "security_group_id": ...}}).',
    )
    placements_file: Path | None = Field(
        None,
        description="A JSON file of more placements in the same form (written by infrastructure "
        "tooling, or by deploy/moto_bootstrap.py for the local stack); `placements` wins.",
    )
    instance_types: tuple[AwsInstanceType, ...] = Field(
        default_factory=_instance_type_table,
        description="Types to choose from: the cheapest covering vCPU, RAM and bandwidth wins.",
    )
    warm_state: Literal["running", "stopped"] = Field(
        "running",
        description="A warm instance runs at its (small) warm size, or is stopped once launched "
        "(only its EBS is billed; taking it into use then means a start).",
    )
    volume_size_gib: int = Field(
        20, ge=1, description="Size of each reservation's gp3 data volume (grown if IOPS need it)."
    )
    volume_device: str = Field("/dev/sdf", description="Device name the data volume attaches as.")
    gp3_baseline_iops: int = Field(3000, ge=1, description="IOPS every gp3 volume gets for free.")
    gp3_max_iops: int = Field(16_000, ge=1, description="Most IOPS one gp3 volume may provision.")
    gp3_max_iops_per_gib: int = Field(500, ge=1, description="gp3 IOPS allowed per GiB of size.")
    gp3_baseline_throughput_mibps: int = Field(
        125, ge=1, description="Throughput (MiB/s) every gp3 volume gets for free."
    )
    gp3_max_mibps_per_iops: float = Field(
        0.25, gt=0, description="gp3 throughput allowed per provisioned IOPS (MiB/s)."
    )
    gp3_max_throughput_mibps: int = Field(
        1000, ge=1, description="Most throughput (MiB/s) one gp3 volume may provision."
    )
    io_size_kib: float = Field(
        32.0, gt=0, description="Average I/O size that turns provisioned IOPS into throughput."
    )
    waiter_delay_seconds: float = Field(
        5.0, gt=0, description="Seconds between polls while waiting for an EC2 state change."
    )
    waiter_max_attempts: int = Field(
        60, ge=1, description="Polls before a wait for an EC2 state change gives up."
    )


class RouterSettings(BaseModel):
    """The Dynamic Connection Router service (``serving.router``)."""

    url: str = Field(
        "http://127.0.0.1:8765", description="Where the router's API is reached from the DAGs."
    )
    host: str = Field("127.0.0.1", description="Address `prewarm router serve` binds.")
    port: int = Field(8765, ge=1, le=65535, description="Port `prewarm router serve` binds.")
    state: Literal["sqlite", "redis"] = Field(
        "sqlite", description="Router state: SQLite under PREWARM_HOME, or Redis."
    )
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis used when state=redis.")
    redis_prefix: str = Field("prewarm:router:", description="Prefix of every router Redis key.")
    production: bool = Field(
        False, description="Production mode: refuses to start without an admin token."
    )
    token_env: str = Field(
        "PREWARM_ROUTER_TOKEN",
        description="Environment variable holding the admin bearer token (never kept in config).",
    )
    sqlite_file: str = Field(
        "router.sqlite", description="Router state file under the serving folder when state=sqlite."
    )
    ewma_alpha: float = Field(
        0.3, gt=0, le=1, description="Default weight of a new probe in the smoothed latency (EWMA)."
    )
    hysteresis_ms: float = Field(
        5.0,
        ge=0,
        description="Default margin around the latency threshold: switch only when the current "
        "latency exceeds threshold + margin or the target's is below threshold - margin.",
    )
    cooldown_s: float = Field(
        900.0, ge=0, description="Default least time between two switchovers of one user."
    )
    min_samples: int = Field(
        3,
        ge=1,
        description="Default probes a region needs before its smoothed latency is trusted.",
    )
    max_probes_per_batch: int = Field(
        10_000, ge=1, description="Most probes one POST /v1/probes may carry."
    )
    rejections_kept: int = Field(
        10_000, ge=0, description="Latest rejected requests kept (with their reason) in state."
    )
    rejected_body_bytes: int = Field(
        65_536, ge=0, description="Bytes of a rejected request's body kept with its reason."
    )
    push_attempts: int = Field(
        5, ge=1, description="Attempts of a config push on connection errors and 5xx answers."
    )
    push_backoff_s: float = Field(
        0.5, ge=0, description="First wait between push attempts; doubles after each."
    )
    push_timeout_s: float = Field(30.0, gt=0, description="Timeout of one config push request.")
    access_log: bool = Field(
        False, description="uvicorn's access log: one line per request (slows a busy router)."
    )
    migration_journal_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the migration journal (and the session routes it flips); "
        "None: SQLite under the serving folder.",
    )
    session_store: Literal["sqlite", "redis", "s3"] = Field(
        "sqlite",
        description="Session state stores, one per region: SQLite files under the serving "
        "folder, Redis (redis_url, keys under redis_prefix), or S3 (one bucket per region).",
    )
    session_s3_bucket: str = Field(
        "prewarm-sessions-{region}",
        description="S3 bucket of a region's sessions ({region}: code).",
    )
    session_s3_endpoint_url: str | None = Field(
        None, description="S3 endpoint override (a moto server in tests); None: real AWS."
    )
    state_copy_fixed_s: float = Field(
        0.25,
        ge=0,
        description="Migration: fixed cost of copying a session's state between regions "
        "(connection set-up and a few round trips), on the injectable clock.",
    )
    state_copy_s_per_mb: float = Field(
        0.02,
        ge=0,
        description="Migration: seconds per MB (10^6 bytes) of session state copied between "
        "regions (0.02: about 50 MB/s across regions), on the injectable clock.",
    )
    run_migrations: bool = Field(
        True,
        description="`prewarm router serve` runs the migration executor in a background thread "
        "(off: run it elsewhere; switchover intents then wait as pending).",
    )
    migration_poll_s: float = Field(
        1.0, gt=0, description="Migration executor: seconds between two looks for new intents."
    )
    executor_lease_seconds: float = Field(
        30.0,
        gt=0,
        description="Lease of the one migration executor at a time, renewed on every pass and "
        "wait; a dead executor's lease lapses after this long and a standby takes over.",
    )
    migration_batch: int = Field(
        1000, ge=1, description="Migration executor: most intents claimed per look."
    )
    feedback_export_seconds: float = Field(
        300.0,
        gt=0,
        description="Seconds between two exports of the router's per-user measurements for the "
        "feedback DAG (serving.feedback.export_router_feedback), from the executor's loop.",
    )


class FeedbackSettings(BaseModel):
    """The feedback loop: router measurements back to features, realised error, drift."""

    lookback_hours: float = Field(
        48.0, gt=0, description="Realised error covers reservations and hours this recent."
    )
    min_coverage_p90: float = Field(
        0.8, ge=0, le=1, description="Drift when the p90 covers a smaller share of observed hours."
    )
    max_error_ratio: float = Field(
        1.25,
        gt=0,
        description="Drift when the p50's MAE exceeds this multiple of the lag-24 naive's MAE.",
    )
    max_unused_share: float = Field(
        0.6, ge=0, le=1, description="Drift when more of the resolved pre-allocations go unused."
    )
    min_observed_hours: int = Field(
        24, ge=1, description="Observed (user, hour) pairs before demand error can mean drift."
    )
    min_resolved_reservations: int = Field(
        10, ge=1, description="Used or expired pre-allocations before their share can mean drift."
    )
    max_intents_per_export: int = Field(
        100_000, ge=1, description="Closed switchover intents read per router export."
    )


class EvaluationSettings(BaseModel):
    """The closed-loop evaluation (``prewarm evaluate``, ``simulation.evaluate``)."""

    train_days: int = Field(
        7, ge=1, description="Days of history before the evaluation range (policies learn there)."
    )
    accounting_seconds: float = Field(
        60.0, gt=0, description="Resolution at which each interval's minutes are accounted."
    )
    session_bytes: int = Field(
        5_000_000, ge=0, description="Session state copied on every migration (its copy delay)."
    )
    allocation_quantile: float = Field(
        0.95, gt=0, lt=1, description="Quantile of active usage static and reactive allocate."
    )
    reactive_consecutive_intervals: int = Field(
        2, ge=1, description="Intervals above the latency SLO before the reactive policy moves."
    )
    reactive_window_hours: int = Field(
        24, ge=1, description="Hours of recent usage the reactive policy sizes allocations on."
    )
    mlflow_experiment: str = Field(
        "prewarm-evaluation",
        description="MLflow experiment of the evaluation runs (metrics per policy, report.html).",
    )
    forecast_hours: int = Field(
        6, ge=1, description="Hours the predictive policy forecasts (and plans) at each replan."
    )
    replan_hours: int = Field(
        1,
        ge=1,
        description="Hours between two forecasts and placement plans of the predictive "
        "policy (each plan's regions are the router's pre-allocations until the next).",
    )
    placement_window_hours: int = Field(
        1,
        ge=1,
        description="Placement window the predictive policy plans with (overrides "
        "settings.placement.window_hours inside the evaluation: moves are hour-scale).",
    )
    lstm_encoder_hours: int = Field(
        72,
        ge=24,
        description="Encoder length of the predictive policy's LSTM (the training "
        "range must hold it, forecast_hours and lstm_validation_hours).",
    )
    lstm_hidden_size: int = Field(32, ge=1, description="Hidden units of its LSTM layers.")
    lstm_validation_hours: int = Field(
        24,
        ge=1,
        description="Latest hours of history that validate (early stopping) and calibrate the "
        "p90 of each fit: a whole day, so that the calibration sees busy and idle hours alike.",
    )
    lstm_epochs: int = Field(3, ge=1, description="Most epochs it trains (and retrains) for.")
    lstm_samples_per_epoch: int = Field(4096, ge=1, description="Training windows drawn per epoch.")
    lstm_threads: int = Field(1, ge=1, description="Torch threads training and forecasting.")
    active_share: float = Field(
        0.15,
        ge=0,
        le=1,
        description="The predictive policy forecasts an hour active when its forecast peak "
        "exceeds this share of the user's recent active peak: the p50 decides whether "
        "capacity is held through the hour before a session starts, the p90 whether the "
        "placement plans the hour as busy; below, the hour is forecast idle.",
    )
    envelope_hours: int = Field(
        48,
        ge=1,
        description="Active hours of each user's recent demand whose peak (plus the placement "
        "headroom) the predictive policy allocates while the user is, or is forecast to be, "
        "active.",
    )
    fallback_consecutive_intervals: int = Field(
        1,
        ge=1,
        description="Intervals above the latency SLO after which the predictive policy falls "
        "back to the best probed region when its plan offers nothing better (reactive: "
        "reactive_consecutive_intervals).",
    )
    same_place_km: float = Field(
        50.0,
        gt=0,
        description="Position fixes this close count as the same place: the predictive policy "
        "corrects its probes of a region by how far the client's measurements of it from there "
        "over the last reactive_window_hours were off them (an IP's database location can be "
        "hundreds of km off).",
    )
    measured_min_intervals: int = Field(
        12,
        ge=1,
        description="Intervals a client must have measured a region from the same place before "
        "the predictive policy corrects that region's probes by them (a few measurements are "
        "mostly jitter).",
    )
    preroll_intervals: int = Field(
        12,
        ge=0,
        description="Intervals before an hour forecast active from which the predictive "
        "policy already allocates for it (sessions start around the hour, not on it).",
    )
    probes_per_interval: int = Field(
        5,
        ge=1,
        description="Probes a client sends per telemetry interval to its serving and "
        "pre-allocated regions (they feed the router's smoothed latencies).",
    )
    warm_lead_intervals: int = Field(
        2,
        ge=0,
        description="Intervals before a planned move at which the predictive policy "
        "starts holding warm capacity there (a cold boot, rounded up, plus one).",
    )
    drift_check_hours: int = Field(
        24, ge=1, description="Hours between two drift checks of the predictive policy."
    )
    retrain_holdout_hours: int = Field(
        24,
        ge=1,
        description="Latest hours a retrained challenger of the predictive policy is not "
        "fitted on: it and the current model are compared there before it takes over.",
    )
    max_retrains: int = Field(
        3, ge=0, description="Most retrainings on drift in one evaluation (bounds its run time)."
    )


class Settings(BaseSettings):
    """Everything configurable in prewarm, in one place."""

    model_config = SettingsConfigDict(
        env_prefix="PREWARM_", env_nested_delimiter="__", extra="ignore"
    )

    home: Path = Field(Path("var"), description="Folder holding all state of the embedded default.")
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
    predict: PredictSettings = PredictSettings()
    placement: PlacementSettings = PlacementSettings()
    provisioning: ProvisioningSettings = ProvisioningSettings()
    aws: AwsSettings = AwsSettings()
    router: RouterSettings = RouterSettings()
    feedback: FeedbackSettings = FeedbackSettings()
    evaluation: EvaluationSettings = EvaluationSettings()

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
    def serving_dir(self) -> Path:
        """Predictions, placement plans, the ledger, the local cloud and the router's state."""
        return self.home / "serving"

    @property
    def ingest_dir(self) -> Path:
        """The ingest step's own records: accepted raw telemetry, quarantine, rejections."""
        return self.home / "ingest"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
