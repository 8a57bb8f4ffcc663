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
        # dashboard of one tenant each (CloudWatch bills dashboards by the month).
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
            search = (
                f'SORT(SEARCH(\'{{{NAMESPACE},host,tenant,tier}} MetricName="{metric}" '
                f"host=\"{names.host}\"', 'Maximum', 300), MAX, DESC, 10)"
            )
            return cloudwatch.GraphWidget(
                title=f"{label}: the 10 largest tenants",
                left=[cloudwatch.MathExpression(expression=search, label="", using_metrics={})],
                width=12,
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
