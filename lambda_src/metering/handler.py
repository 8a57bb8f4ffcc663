"""Entry point of a host's scheduled metering function (an EventBridge schedule; inside the
host's VPC like its provisioner and rotator).

Each run samples the host as its admin (the admin secret, TLS verify-full), records the sample
in the host's usage record (tenantkit.usage_samples, what a billing job reads) and publishes
CloudWatch metrics in embedded metric format through Powertools Metrics: the host's series and
those of the tenants that matter this time (metrics.py bounds how many). A sample that fails
raises: the invocation fails, Lambda's own Errors metric and the function's log say why.
"""

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

from ..core import environment as names
from ..core.connection import settings_from_secret, ssl_root_cert_from_env
from ..core.log import function_logger, logged_request
from ..core.secrets import read_secret_json
from .host import sample_registry
from .metrics import NAMESPACE, TOP_TENANTS, AlarmThresholds, MetricSet, metric_sets

log = logging.getLogger(__name__)
APPLICATION_NAME = "tenantkit-metering"


@dataclass(frozen=True)
class MeteringConfig:
    """The function's environment, parsed once."""

    admin_secret_arn: str
    host: str
    tier: str
    registry_database: str | None
    top: int
    thresholds: AlarmThresholds

    @classmethod
    def from_environment(cls, env: Mapping[str, str]) -> "MeteringConfig":
        """Read the TENANTKIT_METERING_* variables the construct sets; KeyError/ValueError name
        the variable that is missing or wrong."""
        return cls(
            admin_secret_arn=env[names.ADMIN_SECRET_ARN],
            host=env[names.METERING_HOST],
            tier=env[names.METERING_TIER],
            registry_database=env.get(names.METERING_REGISTRY_DATABASE) or None,
            top=int(env.get(names.METERING_TOP_TENANTS, TOP_TENANTS)),
            thresholds=AlarmThresholds(
                connection_percent=float(env.get(names.METERING_CONNECTION_PERCENT, 80)),
                storage_growth_bytes_per_day=float(
                    env.get(names.METERING_STORAGE_GROWTH_MB_PER_DAY, 1024)
                )
                * 1024**2,
                long_statement_seconds=float(env.get(names.METERING_LONG_STATEMENT_SECONDS, 300)),
            ),
        )


def publish(sets: list[MetricSet]) -> None:
    """One embedded-metric-format document per set, on stdout (CloudWatch Logs extracts the
    metrics; no API call, so nothing to throttle)."""
    for metric_set in sets:
        metrics = EphemeralMetrics(namespace=NAMESPACE)
        for key, dimension in metric_set.dimensions.items():
            metrics.add_dimension(name=key, value=dimension)
        for name, (value, unit) in metric_set.values.items():
            metrics.add_metric(name=name, unit=MetricUnit(unit), value=value)
        metrics.flush_metrics()


def on_schedule(_event: Mapping[str, Any], _context: object) -> dict[str, int]:
    """Lambda handler: sample, record, publish; returns how many tenants and metric sets."""
    function_logger(APPLICATION_NAME)
    config = MeteringConfig.from_environment(os.environ)
    with logged_request(host=config.host, tier=config.tier):
        secret = read_secret_json(config.admin_secret_arn)
        settings = settings_from_secret(
            secret, ssl_root_cert_from_env(os.environ), application_name=APPLICATION_NAME
        )
        sample = sample_registry(
            settings, tier=config.tier, registry_database=config.registry_database
        )
        sets = metric_sets(
            sample.usages,
            host=config.host,
            tier=config.tier,
            thresholds=config.thresholds,
            top=config.top,
        )
        publish(sets)
        log.info("sampled %d tenants, published %d metric sets", len(sample.usages), len(sets))
        return {"tenants": len(sample.usages), "metric_sets": len(sets)}
