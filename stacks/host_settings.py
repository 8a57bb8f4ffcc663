"""The catalog's host settings as the constructs' props: the one place that maps them."""

from tenant_constructs import BackupCopy, ClusterCapacity, DatabaseOperations, MeteringProps
from tenantkit.catalog import ClusterSettings, HostOperationsSettings, SiloSettings


def cluster_capacity(settings: ClusterSettings) -> ClusterCapacity:
    """A shared cluster's size (`clusters.bridge` or `clusters.pool`)."""
    return ClusterCapacity(
        engine="aurora",
        min_acu=settings.min_acu,
        max_acu=settings.max_acu,
        instance_class=settings.instance_class,
        readers=settings.readers,
    )


def silo_capacity(settings: SiloSettings) -> ClusterCapacity:
    """A silo tenant's database size (its `silo:` settings)."""
    return ClusterCapacity(
        engine=settings.engine,
        min_acu=settings.min_acu,
        max_acu=settings.max_acu,
        readers=1 if settings.engine == "aurora" and settings.multi_az else 0,
        instance_class=settings.instance_class if settings.engine == "rds" else None,
        storage_gb=settings.storage_gb,
        multi_az=settings.engine == "rds" and settings.multi_az,
        dedicated_key=settings.dedicated_kms_key,
    )


def database_operations(settings: HostOperationsSettings) -> DatabaseOperations:
    """Backups, monitoring and the snapshot to restore of any host's database."""
    copy = settings.backup_copy
    return DatabaseOperations(
        backup_retention_days=settings.backup_retention_days,
        backup_copy=None
        if copy is None
        else BackupCopy(vault_arn=copy.vault_arn, retention_days=copy.retention_days),
        performance_insights=settings.performance_insights,
        monitoring_interval=settings.monitoring_interval,
        metering=MeteringProps(**settings.metering.model_dump()),
        restore_snapshot=settings.restore_snapshot,
    )
