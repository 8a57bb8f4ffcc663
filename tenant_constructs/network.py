"""The network a tenantkit database lives in: isolated subnets, flow logs, private endpoints."""

import aws_cdk.aws_ec2 as ec2
from constructs import Construct

from .acknowledgements import acknowledge_inline_policy
from .host_key import HostLogs


class DatabaseNetwork(Construct):
    """A VPC whose database and compute subnets have no route to the internet.

    Functions in it (the provisioner, secret rotation) reach Secrets Manager through an
    interface endpoint, so no NAT gateway is needed. Flow logs (`add_flow_logs`, once the
    host's key exists) record every rejected and accepted connection for a year.
    """

    def __init__(
        self, scope: Construct, id_: str, *, max_azs: int = 2, cidr: str = "10.0.0.0/16"
    ) -> None:
        super().__init__(scope, id_)
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr(cidr),
            max_azs=max_azs,
            nat_gateways=0,
            subnet_configuration=[
                ec2.SubnetConfiguration(
                    name="data", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=24
                ),
                # For the tenants' (or the shared) compute: no route out either; AWS APIs
                # through interface endpoints. Add a NAT gateway only if the compute needs
                # the internet (and count the Elastic IP against the quota).
                ec2.SubnetConfiguration(
                    name="compute", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=22
                ),
            ],
        )
        self.subnets = ec2.SubnetSelection(subnet_group_name="data")
        self.compute_subnets = ec2.SubnetSelection(subnet_group_name="compute")
        self.secrets_manager_endpoint = self.vpc.add_interface_endpoint(
            "SecretsManager",
            service=ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER,
            subnets=self.subnets,
            private_dns_enabled=True,
            # Ingress is granted per client (connections.allow_default_port_from), not VPC-wide.
            open=False,
        )

    def add_flow_logs(self, host_logs: HostLogs) -> ec2.FlowLog:
        """Log every accepted and rejected flow of the VPC to the host's `flow-logs` group."""
        group = host_logs.group(self, "FlowLogs", purpose="flow-logs")
        flow_log = self.vpc.add_flow_log(
            "FlowLog",
            destination=ec2.FlowLogDestination.to_cloud_watch_logs(group),
            traffic_type=ec2.FlowLogTrafficType.ALL,
        )
        acknowledge_inline_policy(flow_log.node.find_child("IAMRole"))
        return flow_log

    def add_sts_endpoint(self) -> ec2.InterfaceVpcEndpoint:
        """STS in the VPC: shared compute assumes the tenant-access role from isolated subnets."""
        return self.vpc.add_interface_endpoint(
            "Sts",
            service=ec2.InterfaceVpcEndpointAwsService.STS,
            subnets=self.subnets,
            private_dns_enabled=True,
            open=False,
        )
