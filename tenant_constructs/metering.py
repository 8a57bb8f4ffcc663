"""A host's metering: the scheduled function that samples per-tenant usage inside the VPC and
publishes it (lambda_src/metering), a dashboard of its tier, noisy-neighbour alarms and the
KMS-encrypted SNS topic they notify."""

import aws_cdk as cdk
import aws_cdk.aws_cloudwatch as cloudwatch
import aws_cdk.aws_cloudwatch_actions as cloudwatch_actions
import aws_cdk.aws_ec2 as ec2
import aws_cdk.aws_events as events
import aws_cdk.aws_events_targets as targets
import aws_cdk.aws_iam as iam
import aws_cdk.aws_kms as kms
import aws_cdk.aws_secretsmanager as secretsmanager
import aws_cdk.aws_sns as sns
from constructs import Construct

from lambda_src.core import environment as env_names
from lambda_src.metering.metrics import NAMESPACE
from lambda_src.tenancy import HostNames

from .acknowledgements import acknowledge_inline_policy
from .database_function import DatabaseFunction, host_secrets_arn, host_tag_condition
from .databases import HostDatabase, MeteringProps
from .host_key import HostLogs, read_secrets_with_key

HANDLER = "lambda_src.metering.handler.on_schedule"

HOST_SERIES = f"{{{NAMESPACE},host,tier}}"
"""The schema of a host's own series (lambda_src/metering/metrics.py): a SEARCH on it finds
no tenant's series, whose dimensions are host, tenant and tier."""
TENANT_SERIES = f"{{{NAMESPACE},host,tenant,tier}}"
"""The schema of one tenant's series."""


def _search(schema: str, metric: str, where: str) -> str:
    return f"SEARCH('{schema} MetricName=\"{metric}\" {where}', 'Maximum', 300)"


def _largest(schema: str, metric: str, where: str, title: str) -> cloudwatch.GraphWidget:
    """The 10 series of `metric` with the highest maximum among those `where` selects."""
    expression = f"SORT({_search(schema, metric, where)}, MAX, DESC, 10)"
    return cloudwatch.GraphWidget(
        title=title,
        left=[cloudwatch.MathExpression(expression=expression, label="", using_metrics={})],
        width=12,
    )


class TenantMetering(Construct):
    """One metering function per host (fixed name HostNames.metering_function), run by an
    EventBridge schedule; the alarms watch the host's own series (the worst tenant of each
    signal), whose values name no tenant: the tenant is in its own series and the function's
    log."""

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        names: HostNames,
        tier: str,
        registry_database: str | None,
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
        database: HostDatabase,
        secrets_endpoint: ec2.IConnectable,
        admin_secret: secretsmanager.ISecret,
        tls_environment: dict[str, str],
        key: kms.Key,
        host_logs: HostLogs,
        props: MeteringProps,
    ) -> None:
        super().__init__(scope, id_)
        environment = {
            env_names.ADMIN_SECRET_ARN: admin_secret.secret_arn,
            env_names.METERING_HOST: names.host,
            env_names.METERING_TIER: tier,
            env_names.METERING_TOP_TENANTS: str(props.top_tenants),
            env_names.METERING_CONNECTION_PERCENT: str(props.connection_percent),
            env_names.METERING_STORAGE_GROWTH_MB_PER_DAY: str(props.storage_growth_mb_per_day),
            env_names.METERING_LONG_STATEMENT_SECONDS: str(props.long_statement_seconds),
            **tls_environment,
        }
        if registry_database is not None:
            environment[env_names.METERING_REGISTRY_DATABASE] = registry_database
        metering = DatabaseFunction(
            self,
            "Function",
            handler=HANDLER,
            description="tenantkit per-tenant metering",
            function_name=names.metering_function,
            vpc=vpc,
            subnets=subnets,
            database=database,
            secrets_endpoint=secrets_endpoint,
            environment=environment,
            timeout=cdk.Duration.minutes(2),
            host_logs=host_logs,
            log_purpose="metering",
            invoked_by="",
            asynchronous=(
                "Invoked by its EventBridge schedule with empty events: a failed sample is "
                "retried by Lambda and then by the next run, and the function's Errors metric "
                "and log record it; a dead-letter queue would keep only empty schedule events"
            ),
        )
        self.function = metering.function
        read_admin = iam.Policy(
            self,
            "ReadAdminSecret",
            statements=[
                iam.PolicyStatement(
                    actions=["secretsmanager:GetSecretValue"],
                    resources=[host_secrets_arn(self)],
                    conditions=host_tag_condition(names.host),
                ),
                read_secrets_with_key(self, key.key_arn),
            ],
        )
        metering.role.attach_inline_policy(read_admin)
        acknowledge_inline_policy(read_admin)
        cdk.Validations.of(read_admin).acknowledge(
            cdk.Acknowledgment(
                id="AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:secretsmanager:"
                "<AWS::Region>:<AWS::AccountId>:secret:tenantkit/*]",
                reason="The admin secret's ARN ends in random characters; the statement is "
                f"limited to secrets tagged {names.host} by an ABAC resource-tag condition",
            )
        )
        self.schedule = events.Rule(
            self,
            "Schedule",
            description=f"tenantkit: meter {names.host} every {props.schedule_minutes} min",
            schedule=events.Schedule.rate(cdk.Duration.minutes(props.schedule_minutes)),
            targets=[targets.LambdaFunction(self.function, retry_attempts=1)],
        )
        # CloudWatch publishes alarm notifications to the topic through the host key.
        key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="CloudWatchAlarmsToTheHostTopic",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],
                conditions={"StringEquals": {"aws:SourceAccount": cdk.Stack.of(self).account}},
            )
        )
        self.topic = sns.Topic(
            self,
            "Alarms",
            display_name=f"tenantkit {names.host}: noisy neighbours",
            master_key=key,
            enforce_ssl=True,
        )
        self.alarms = self._alarms(names, tier, props)
        # A dashboard per shared tier's host; a silo tenant's host has its alarms, not a
        # dashboard of one tenant each (CloudWatch bills dashboards by the month): the silo
        # tier has one dashboard of every silo (SiloTierDashboard).
        self.dashboard = self._dashboard(names, tier) if tier != "silo" else None

    def _metric(self, names: HostNames, tier: str, name: str, statistic: str) -> cloudwatch.Metric:
        return cloudwatch.Metric(
            namespace=NAMESPACE,
            metric_name=name,
            dimensions_map={"host": names.host, "tier": tier},
            statistic=statistic,
            period=cdk.Duration.minutes(5),
        )

    def _alarms(self, names: HostNames, tier: str, props: MeteringProps) -> list[cloudwatch.Alarm]:
        specs = [
            (
                "ConnectionsNearLimit",
                "MaxConnectionUsePercent",
                props.connection_percent,
                f"a tenant of {names.host} uses {props.connection_percent} % or more of its "
                "connection limit (its own series and the metering log name it)",
            ),
            (
                "StorageGrowingFast",
                "TenantsOverStorageGrowth",
                1,
                f"a tenant of {names.host} grows faster than {props.storage_growth_mb_per_day} "
                "MB a day",
            ),
            (
                "LongStatement",
                "MaxLongestStatementSeconds",
                props.long_statement_seconds,
                f"a statement of one tenant of {names.host} has run "
                f"{props.long_statement_seconds} s or longer",
            ),
        ]
        alarms = []
        for id_, metric, threshold, description in specs:
            alarm = cloudwatch.Alarm(
                self,
                id_,
                alarm_description=description,
                metric=self._metric(names, tier, metric, "Maximum"),
                threshold=threshold,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                evaluation_periods=1,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            )
            alarm.add_alarm_action(cloudwatch_actions.SnsAction(self.topic))
            alarms.append(alarm)
        # A metering function that fails leaves the other alarms blind: say so.
        failing = cloudwatch.Alarm(
            self,
            "MeteringFails",
            alarm_description=f"the metering function of {names.host} failed",
            metric=self.function.metric_errors(period=cdk.Duration.minutes(15)),
            threshold=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        failing.add_alarm_action(cloudwatch_actions.SnsAction(self.topic))
        return [*alarms, failing]

    def _dashboard(self, names: HostNames, tier: str) -> cloudwatch.Dashboard:
        def top(metric: str, label: str) -> cloudwatch.GraphWidget:
            return _largest(
                TENANT_SERIES, metric, f'host="{names.host}"', f"{label}: the 10 largest tenants"
            )

        host = [
            ("StorageBytes", "Sum"),
            ("MaxConnectionUsePercent", "Maximum"),
            ("MaxLongestStatementSeconds", "Maximum"),
            ("MaxStorageGrowthBytesPerDay", "Maximum"),
        ]
        dashboard = cloudwatch.Dashboard(
            self,
            "Dashboard",
            dashboard_name=f"{names.host}-tenants",
        )
        dashboard.add_widgets(
            cloudwatch.TextWidget(
                markdown=f"# {names.host} ({tier}): per-tenant usage\nPer-tenant series exist "
                "for the largest tenants of each signal and every tenant over a threshold; "
                "the usage record (tenantkit.usage_samples) has every tenant.",
                width=24,
                height=2,
            )
        )
        dashboard.add_widgets(
            *(
                cloudwatch.GraphWidget(
                    title=f"{names.host}: {metric}",
                    left=[self._metric(names, tier, metric, statistic)],
                    width=6,
                )
                for metric, statistic in host
            )
        )
        dashboard.add_widgets(top("StorageBytes", "storage"), top("Connections", "connections"))
        dashboard.add_widgets(
            top("StorageGrowthBytesPerDay", "storage growth a day"),
            top("Transactions", "transactions"),
        )
        dashboard.add_widgets(
            cloudwatch.AlarmStatusWidget(title="noisy neighbours", alarms=self.alarms, width=24)
        )
        return dashboard


class SiloTierDashboard(Construct):
    """One dashboard of every silo tenant (`<SILO_MONITORING>-tenants`), found by metric search
    on the dimension tier="silo": it names no tenant and no host, so a new silo tenant shows on
    it without a change to it. Each silo's alarms stay in the silo's own stack."""

    def __init__(self, scope: Construct, id_: str, *, name: str) -> None:
        super().__init__(scope, id_)
        where = 'tier="silo"'
        self.dashboard = cloudwatch.Dashboard(self, "Dashboard", dashboard_name=f"{name}-tenants")
        self.dashboard.add_widgets(
            cloudwatch.TextWidget(
                markdown="# silo tier: every silo tenant\nFound by metric search on "
                "`tier=silo`: the hosts' own series (one host per silo tenant) and the "
                "tenants' series. **Alarms** are in each silo tenant's stack "
                "(`tenantkit-silo-<id>`), which CloudFormation names them after: search "
                "`tenantkit-silo-` in the CloudWatch alarms list. The usage record "
                "(tenantkit.usage_samples in each silo's admin database) has every sample.",
                width=24,
                height=3,
            )
        )
        self.dashboard.add_widgets(
            cloudwatch.SingleValueWidget(
                title="silo tier now",
                metrics=[
                    cloudwatch.MathExpression(
                        expression=f"SUM({_search(HOST_SERIES, 'Tenants', where)})",
                        label="silo tenants metered",
                        using_metrics={},
                    ),
                    cloudwatch.MathExpression(
                        expression=f"SUM({_search(HOST_SERIES, 'StorageBytes', where)})",
                        label="storage of every silo",
                        using_metrics={},
                    ),
                ],
                width=24,
                height=3,
            )
        )
        worst = [
            ("MaxConnectionUsePercent", "connection use (% of the limit)"),
            ("MaxLongestStatementSeconds", "longest statement (s)"),
            ("MaxStorageGrowthBytesPerDay", "storage growth a day"),
            ("TenantsOverStorageGrowth", "tenants over the storage growth threshold"),
        ]
        self.dashboard.add_widgets(
            *(
                _largest(HOST_SERIES, metric, where, f"{label}: the 10 highest silos")
                for metric, label in worst[:2]
            )
        )
        self.dashboard.add_widgets(
            *(
                _largest(HOST_SERIES, metric, where, f"{label}: the 10 highest silos")
                for metric, label in worst[2:]
            )
        )
        self.dashboard.add_widgets(
            _largest(TENANT_SERIES, "StorageBytes", where, "storage: the 10 largest silo tenants"),
            _largest(
                TENANT_SERIES, "Connections", where, "connections: the 10 largest silo tenants"
            ),
        )
        self.dashboard.add_widgets(
            _largest(
                TENANT_SERIES,
                "StorageGrowthBytesPerDay",
                where,
                "storage growth a day: the 10 largest silo tenants",
            ),
            _largest(
                TENANT_SERIES, "Transactions", where, "transactions: the 10 largest silo tenants"
            ),
        )
