"""The pooled-compute IAM of the bridge tier and of a strict pool, evaluated by an IAM policy
simulator.

test_access_templates.py pins the policy documents; these tests ask
@cloud-copilot/iam-simulate (pinned in package.json, run offline through iam_simulate.mjs) what
the synthesized documents allow: the tenant-access role's trust and identity policies and the
shared compute role's identity policy, with CloudFormation intrinsics replaced by fixed fake
values, against concrete requests carrying session tags, request tags and resource tags.

Where the simulator cannot take the requests as AWS would see them:
- `secretsmanager:ResourceTag/<key>`: its data (iam-data) spells the key literally
  `secretsmanager:ResourceTag/tag-key`, so a real tag key is "not found" and the simulation
  fails. AWS fills that key and the global `aws:ResourceTag/<key>` from the same secret tags, so
  the tests rename the prefix in the policies and pass the secret's tags as
  `aws:ResourceTag/<key>`; a tripwire test notices when the simulator learns the key.
- `kms:EncryptionContext:<key>`: the simulator matches variable keys only in the form
  `prefix/<name>`, so it ignores this one. The tests rename it `aws:ResourceTag/
  encryption-context-<key>` in the policies and in the request (the same string operator on
  the same value); a tripwire test notices when the simulator learns it.
- AWS authorizes a tagged AssumeRole as `sts:AssumeRole` and `sts:TagSession`; the simulator
  evaluates one action per request, so the tests evaluate both with the same request tags.
- Session policies are simulated (the package's `sessionPolicy` input, although its README
  still lists them as coming soon): the token-vending tests rely on it.
- Every request must come back without validation errors and with no context key ignored as
  not applicable, so no "denied" can come from a request the simulator did not understand.
"""

import json
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from lambda_src.tenancy import MAX_TENANT_ID_LENGTH, tenant_names
from lambda_src.tenancy.ids import RESERVED_TENANT_ID_PREFIXES
from lambda_src.tenant_runtime import tenant_session_policy

from .conftest import BRIDGE, BRIDGE_CONTOSO, BRIDGE_FABRIKAM, POOL_STACK, REPO_ROOT, Synth

pytestmark = pytest.mark.slow

NODE = REPO_ROOT / "node_modules" / ".bin" / "node"
SIMULATOR = REPO_ROOT / "tests" / "infrastructure" / "iam_simulate.mjs"

PARTITION = "aws"
REGION = "us-east-1"
ACCOUNT = "111122223333"
OTHER_ACCOUNT = "444455556666"
CLUSTER_RESOURCE_ID = "cluster-ABCDEFGHIJKL"
SECRET_ARN_SUFFIX = "-AbCdEf"  # Secrets Manager appends 6 random characters to the name
BRIDGE_TENANT_STACKS = {"contoso": BRIDGE_CONTOSO, "fabrikam": BRIDGE_FABRIKAM}
TENANTS = tuple(BRIDGE_TENANT_STACKS)

ALLOWED = "Allowed"
DENIED = "denied"
DATA_ACTIONS = (
    "rds-db:connect",
    "secretsmanager:GetSecretValue",
    "secretsmanager:DescribeSecret",
)
ASSUME_ACTIONS = ("sts:AssumeRole", "sts:TagSession")

Policy = dict[str, Any]


# --- CloudFormation intrinsics, resolved with fixed fake values --------------------------------

PSEUDO_PARAMETERS = {
    "AWS::Partition": PARTITION,
    "AWS::Region": REGION,
    "AWS::AccountId": ACCOUNT,
    "AWS::URLSuffix": "amazonaws.com",
}
_SUB_VARIABLE = re.compile(r"\$\{([^}]*)\}")


@dataclass(frozen=True)
class Resolver:
    """Ref, Fn::GetAtt, Fn::Join and Fn::Sub with pseudo parameters and fake physical ids.

    Anything else (a condition, an import, an unknown attribute) raises: a policy the tests
    cannot make concrete is not evaluated at all.
    """

    refs: Mapping[str, str]
    attributes: Mapping[tuple[str, str], str]

    @classmethod
    def for_template(cls, template: Mapping[str, Any]) -> "Resolver":
        refs = dict(PSEUDO_PARAMETERS)
        attributes: dict[tuple[str, str], str] = {}
        for logical_id, resource in template["Resources"].items():
            type_ = resource["Type"]
            if type_ == "AWS::IAM::Role":
                refs[logical_id] = logical_id  # a role's Ref is its name
                attributes[logical_id, "Arn"] = role_arn(logical_id)
            elif type_ == "AWS::RDS::DBCluster":
                attributes[logical_id, "DBClusterResourceId"] = CLUSTER_RESOURCE_ID
            elif type_ == "AWS::KMS::Key":
                attributes[logical_id, "Arn"] = key_arn(logical_id)
            elif type_ == "AWS::Logs::LogGroup":
                attributes[logical_id, "Arn"] = (
                    f"arn:{PARTITION}:logs:{REGION}:{ACCOUNT}:log-group:{logical_id}:*"
                )
        return cls(refs=refs, attributes=attributes)

    def __call__(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self(item) for item in value]
        if not isinstance(value, dict):
            return value
        intrinsics = [key for key in value if key == "Ref" or key.startswith("Fn::")]
        if not intrinsics:
            return {key: self(item) for key, item in value.items()}
        assert len(value) == 1, f"malformed intrinsic {value!r}"
        (name, argument) = next(iter(value.items()))
        if name == "Ref":
            return self.refs[argument]
        if name == "Fn::GetAtt":
            logical_id, attribute = argument
            return self.attributes[logical_id, attribute]
        if name == "Fn::Join":
            separator, parts = argument
            return separator.join(str(self(part)) for part in parts)
        if name == "Fn::Sub":
            template, variables = (argument, {}) if isinstance(argument, str) else argument
            return _SUB_VARIABLE.sub(lambda m: self._sub(m.group(1), variables), template)
        raise ValueError(f"cannot resolve {value!r}")

    def _sub(self, name: str, variables: Mapping[str, Any]) -> str:
        if name.startswith("!"):
            return "${" + name[1:] + "}"
        if name in variables:
            return str(self(variables[name]))
        if "." in name:
            logical_id, attribute = name.split(".", 1)
            return self.attributes[logical_id, attribute]
        return self.refs[name]


def key_arn(logical_id: str) -> str:
    return f"arn:{PARTITION}:kms:{REGION}:{ACCOUNT}:key/{logical_id}"


def role_arn(name: str, account: str = ACCOUNT) -> str:
    return f"arn:{PARTITION}:iam::{account}:role/{name}"


def session_arn(role: str, session: str, account: str = ACCOUNT) -> str:
    return f"arn:{PARTITION}:sts::{account}:assumed-role/{role}/{session}"


# --- The synthesized IAM of the bridge host ----------------------------------------------------


def only_resource(template: Mapping[str, Any], prefix: str, type_: str) -> str:
    found: list[str] = [
        logical_id
        for logical_id, resource in template["Resources"].items()
        if logical_id.startswith(prefix) and resource["Type"] == type_
    ]
    assert len(found) == 1, (prefix, type_, found)
    return found[0]


def identity_policies(template: Mapping[str, Any], role: str, resolve: Resolver) -> list[Policy]:
    """Every policy document that applies to `role`: attached policies and inline ones."""
    properties = template["Resources"][role]["Properties"]
    assert "ManagedPolicyArns" not in properties, (
        f"{role} has managed policies, which this offline evaluation cannot see"
    )
    documents = [inline["PolicyDocument"] for inline in properties.get("Policies", [])]
    documents += [
        resource["Properties"]["PolicyDocument"]
        for resource in template["Resources"].values()
        if resource["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy")
        and {"Ref": role} in resource["Properties"].get("Roles", [])
    ]
    assert documents, f"no identity policy applies to {role}"
    return [resolve(document) for document in documents]


ENCRYPTION_CONTEXT = "kms:encryptioncontext:"


def simulated_key(key: str) -> str:
    """The condition key as the simulator can evaluate it (see the module docstring)."""
    if key.lower().startswith("secretsmanager:resourcetag/"):
        return f"aws:ResourceTag/{key.split('/', 1)[1]}"
    if key.lower().startswith(ENCRYPTION_CONTEXT):
        return f"aws:ResourceTag/encryption-context-{key[len(ENCRYPTION_CONTEXT) :]}"
    return key


def with_global_resource_tag_keys(policy: Policy) -> Policy:
    """`secretsmanager:ResourceTag/<key>` renamed `aws:ResourceTag/<key>` in every condition
    (the simulator has no data for the first; AWS fills both from the secret's tags), and
    `kms:EncryptionContext:<key>` renamed as simulated_key says."""

    def renamed(block: Mapping[str, Any]) -> dict[str, Any]:
        return {
            operator: {simulated_key(key): value for key, value in keys.items()}
            for operator, keys in block.items()
        }

    return {
        **policy,
        "Statement": [
            {**s, "Condition": renamed(s["Condition"])} if "Condition" in s else s
            for s in policy["Statement"]
        ],
    }


@dataclass(frozen=True)
class Secret:
    arn: str
    tags: Mapping[str, str]

    def retagged(self, **tags: str | None) -> "Secret":
        merged = {**self.tags, **tags}
        return Secret(self.arn, {key: value for key, value in merged.items() if value is not None})

    def context(self) -> dict[str, str]:
        return {f"aws:ResourceTag/{key}": value for key, value in self.tags.items()}


@dataclass(frozen=True)
class BridgeIam:
    """The bridge host's IAM as deployed, in concrete values."""

    shared_role: str
    access_role: str
    access_trust: Policy
    access_identity: list[Policy]
    """With `secretsmanager:ResourceTag/` renamed (see with_global_resource_tag_keys)."""
    access_identity_as_synthesized: list[Policy]
    shared_identity: list[Policy]
    secrets: Mapping[str, Secret]
    """Each bridge tenant's login secret: the name and tags its tenant stack gives it."""
    app_secrets: Mapping[str, Secret]
    """Every secret the app's stacks create, by `<stack>/<name>`."""
    key_arn: str
    """The bridge host's KMS key, which encrypts its tenants' secrets."""
    key_policy: Policy
    """Its key policy (KMS honours identity policies only where the key policy says so)."""

    def access_session(self, tenant_tag: str | None) -> str:
        return session_arn(self.access_role, f"tenant-{tenant_tag or 'untagged'}")

    @property
    def shared_session(self) -> str:
        return session_arn(self.shared_role, "shared-function")


@pytest.fixture(scope="module")
def bridge(synth: Synth) -> BridgeIam:
    template = synth.raw(BRIDGE)
    resolve = Resolver.for_template(template)
    shared = only_resource(template, "SharedComputeRole", "AWS::IAM::Role")
    access = only_resource(template, "TenantAccessRole", "AWS::IAM::Role")
    key = only_resource(template, "HostDatabaseStorageKey", "AWS::KMS::Key")
    access_identity = identity_policies(template, access, resolve)
    app_secrets: dict[str, Secret] = {}
    for stack in synth.assembly.stacks:
        for logical_id, resource in stack.template["Resources"].items():
            if resource["Type"] == "AWS::SecretsManager::Secret":
                properties = resource["Properties"]
                name = properties.get("Name", logical_id)
                app_secrets[f"{stack.stack_name}/{name}"] = Secret(
                    arn=f"arn:{PARTITION}:secretsmanager:{REGION}:{ACCOUNT}:secret:"
                    f"{name}{SECRET_ARN_SUFFIX}",
                    tags={tag["Key"]: tag["Value"] for tag in properties.get("Tags", [])},
                )
    secrets = {
        tenant: app_secrets[f"{stack}/{tenant_names(tenant).secret_name}"]
        for tenant, stack in BRIDGE_TENANT_STACKS.items()
    }
    return BridgeIam(
        shared_role=shared,
        access_role=access,
        access_trust=resolve(
            template["Resources"][access]["Properties"]["AssumeRolePolicyDocument"]
        ),
        access_identity=[with_global_resource_tag_keys(p) for p in access_identity],
        access_identity_as_synthesized=access_identity,
        shared_identity=identity_policies(template, shared, resolve),
        secrets=secrets,
        app_secrets=app_secrets,
        key_arn=key_arn(key),
        key_policy=resolve(template["Resources"][key]["Properties"]["KeyPolicy"]),
    )


# --- Requests to the simulator -----------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    principal: str
    action: str
    resource: str
    context: Mapping[str, str | list[str]] = field(default_factory=dict)
    identity: Sequence[Policy] = ()
    resource_policy: Policy | None = None
    session_policy: Policy | None = None

    def simulation(self) -> dict[str, Any]:
        simulation: dict[str, Any] = {
            "request": {
                "principal": self.principal,
                "action": self.action,
                "resource": {"resource": self.resource, "accountId": ACCOUNT},
                "contextVariables": dict(self.context),
            },
            "identityPolicies": [
                {"name": f"identity-{i}", "policy": p} for i, p in enumerate(self.identity)
            ],
            "serviceControlPolicies": [],
            "resourceControlPolicies": [],
        }
        if self.resource_policy is not None:
            simulation["resourcePolicy"] = self.resource_policy
        if self.session_policy is not None:
            simulation["sessionPolicy"] = self.session_policy
        return simulation


def run_simulator(requests: Sequence[Request]) -> list[dict[str, Any]]:
    """The simulator's raw answers, one per request."""
    completed = subprocess.run(
        [str(NODE), str(SIMULATOR)],
        input=json.dumps([r.simulation() for r in requests]),
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    answers: list[dict[str, Any]] = json.loads(completed.stdout)
    assert len(answers) == len(requests)
    return answers


def verdicts(cases: Mapping[str, Request]) -> dict[str, str]:
    """ALLOWED or DENIED (implicitly or explicitly) per case; a request the simulator refused
    or only partly understood fails the test instead of counting as denied."""
    answers = run_simulator(list(cases.values()))
    found = {}
    for (name, request), answer in zip(cases.items(), answers, strict=True):
        assert answer["result"] != "Error", (name, request, answer["errors"])
        assert answer["result"] in ("Allowed", "ImplicitlyDenied", "ExplicitlyDenied"), answer
        assert answer["ignoredContextKeys"] == [], (name, answer["ignoredContextKeys"])
        found[name] = ALLOWED if answer["result"] == "Allowed" else DENIED
    return found


def db_user_arn(tenant: str) -> str:
    return (
        f"arn:{PARTITION}:rds-db:{REGION}:{ACCOUNT}:dbuser:{CLUSTER_RESOURCE_ID}/"
        f"{tenant_names(tenant).iam_user}"
    )


def data_request(
    bridge: BridgeIam,
    principal: str,
    action: str,
    tenant: str,
    *,
    context: Mapping[str, str] | None = None,
    identity: Sequence[Policy] | None = None,
    session_policy: Policy | None = None,
) -> Request:
    """`action` on `tenant`'s db user or login secret (with the secret's tags)."""
    context = dict(context or {})
    if action == "rds-db:connect":
        resource = db_user_arn(tenant)
    else:
        resource = bridge.secrets[tenant].arn
        context.update(bridge.secrets[tenant].context())
    return Request(
        principal=principal,
        action=action,
        resource=resource,
        context=context,
        identity=bridge.access_identity if identity is None else identity,
        session_policy=session_policy,
    )


def tagged(tenant: str) -> dict[str, str]:
    return {"aws:PrincipalTag/tenant": tenant}


def vended_session_policy(tenant: str) -> Policy:
    return tenant_session_policy(
        tenant,
        partition=PARTITION,
        region=REGION,
        account=ACCOUNT,
        db_resource_id=CLUSTER_RESOURCE_ID,
    )


def assume_request(
    bridge: BridgeIam,
    action: str,
    tags: Mapping[str, str],
    *,
    principal: str | None = None,
    identity: Sequence[Policy] | None = None,
    trust: Policy | None = None,
    target: str | None = None,
) -> Request:
    """The shared role (unless `principal`) assuming the tenant-access role with `tags`."""
    context: dict[str, str | list[str]] = {f"aws:RequestTag/{k}": v for k, v in tags.items()}
    if tags:
        context["aws:TagKeys"] = list(tags)
    return Request(
        principal=bridge.shared_session if principal is None else principal,
        action=action,
        resource=role_arn(target or bridge.access_role),
        context=context,
        identity=bridge.shared_identity if identity is None else identity,
        resource_policy=bridge.access_trust if trust is None else trust,
    )


# --- The tenant-access role's identity policy --------------------------------------------------


def test_a_session_tagged_contoso_reaches_contosos_db_user_and_secret_and_nothing_of_fabrikam(
    bridge: BridgeIam,
) -> None:
    # GIVEN a session of the tenant-access role tagged tenant=contoso
    session = bridge.access_session("contoso")
    # WHEN it connects as each tenant's IAM db user and reads each tenant's secret
    cases = {
        f"{action} {tenant}": data_request(
            bridge, session, action, tenant, context=tagged("contoso")
        )
        for action in DATA_ACTIONS
        for tenant in TENANTS
    }
    # THEN only contoso's are allowed
    assert verdicts(cases) == {
        f"{action} {tenant}": ALLOWED if tenant == "contoso" else DENIED
        for action in DATA_ACTIONS
        for tenant in TENANTS
    }


def test_the_simulator_allows_fabrikam_to_a_session_tagged_fabrikam_so_the_denials_are_real(
    bridge: BridgeIam,
) -> None:
    # GIVEN the same requests for fabrikam's resources, from a session tagged tenant=fabrikam
    session = bridge.access_session("fabrikam")
    cases = {
        action: data_request(bridge, session, action, "fabrikam", context=tagged("fabrikam"))
        for action in DATA_ACTIONS
    }
    # WHEN they are simulated THEN they are allowed: the contoso session's denials above come
    # from the tag, not from requests the simulator could never allow
    assert verdicts(cases) == dict.fromkeys(DATA_ACTIONS, ALLOWED)


def test_a_session_without_the_tenant_tag_reaches_no_tenant(bridge: BridgeIam) -> None:
    # GIVEN a session of the tenant-access role with no session tag
    session = bridge.access_session(None)
    # WHEN it asks for every tenant's db user and secret
    cases = {
        f"{action} {tenant}": data_request(bridge, session, action, tenant)
        for action in DATA_ACTIONS
        for tenant in TENANTS
    }
    # THEN everything is denied
    assert verdicts(cases) == dict.fromkeys(cases, DENIED)


def test_a_secret_with_the_right_tenant_tag_but_another_host_or_name_is_out_of_reach(
    bridge: BridgeIam,
) -> None:
    # GIVEN a session tagged contoso and secrets tagged tenant=contoso that are not the bridge
    # host's tenant secrets: another host's tag, no host tag, a name outside tenantkit/
    session = bridge.access_session("contoso")
    own = bridge.secrets["contoso"]
    secrets = {
        "own secret": own,
        "pool host": own.retagged(**{"tenantkit-host": "tenantkit-pool"}),
        "silo host": own.retagged(**{"tenantkit-host": "tenantkit-silo-contoso"}),
        "no host tag": own.retagged(**{"tenantkit-host": None}),
        "outside tenantkit/": Secret(
            own.arn.replace(":secret:tenantkit/", ":secret:other/"), own.tags
        ),
    }
    # WHEN the session reads each of them
    cases = {
        name: Request(
            principal=session,
            action="secretsmanager:GetSecretValue",
            resource=secret.arn,
            context={**tagged("contoso"), **secret.context()},
            identity=bridge.access_identity,
        )
        for name, secret in secrets.items()
    }
    # THEN only the bridge host's own secret of contoso is readable
    assert verdicts(cases) == {name: ALLOWED if name == "own secret" else DENIED for name in cases}


def test_no_other_secret_of_the_app_is_readable_by_a_session_tagged_with_its_tenant_tag(
    bridge: BridgeIam,
) -> None:
    # GIVEN every secret the app creates (admin secrets, the pool's runtime secret tagged
    # tenant=pool, silo tenants' secrets), each asked for by a session tagged with the secret's
    # own tenant tag (or contoso when it has none)
    cases = {
        name: Request(
            principal=bridge.access_session(secret.tags.get("tenant", "contoso")),
            action="secretsmanager:GetSecretValue",
            resource=secret.arn,
            context={**tagged(secret.tags.get("tenant", "contoso")), **secret.context()},
            identity=bridge.access_identity,
        )
        for name, secret in bridge.app_secrets.items()
    }
    bridge_logins = {f"{BRIDGE_TENANT_STACKS[t]}/{tenant_names(t).secret_name}" for t in TENANTS}
    assert bridge_logins < set(cases), "the bridge tenants' login secrets are among them"
    # WHEN each is read THEN only the bridge tenants' login secrets are readable
    assert verdicts(cases) == {name: ALLOWED if name in bridge_logins else DENIED for name in cases}


def test_a_session_tagged_contoso_cannot_connect_as_contoso_on_another_cluster(
    bridge: BridgeIam,
) -> None:
    # GIVEN a session tagged contoso
    session = bridge.access_session("contoso")
    own = db_user_arn("contoso")
    users = {
        "bridge cluster": own,
        "another cluster": own.replace(CLUSTER_RESOURCE_ID, "cluster-ZYXWVUTSRQPO"),
        "another region": own.replace(f":{REGION}:", ":eu-west-1:"),
    }
    # WHEN it connects as tenant_contoso_iam on each
    cases = {
        name: Request(
            principal=session,
            action="rds-db:connect",
            resource=user,
            context=tagged("contoso"),
            identity=bridge.access_identity,
        )
        for name, user in users.items()
    }
    # THEN only the bridge host's cluster lets it in
    assert verdicts(cases) == {
        name: ALLOWED if name == "bridge cluster" else DENIED for name in cases
    }


# --- The tenant-access role's trust policy ----------------------------------------------------


VALID_TENANT_TAGS = ("contoso", "fabrikam", "acme-corp", "a1", "a" * MAX_TENANT_ID_LENGTH)
REFUSED_TENANT_TAGS = (
    "",
    "*",
    "?",
    "$",
    "con*",
    "contos?",
    "${aws:username}",
    "a/b",
    "contoso/..",
    "a:b",
    "a_b",
    "a b",
    " contoso",
    *(f"{prefix}x" for prefix in RESERVED_TENANT_ID_PREFIXES),
    "tenantkit-bridge",
    "Contoso",
    "CONTOSO",
    "AWS-x",
    "9lives",
    "-contoso",
    "contoso-",
    "con--toso",
    "a",
    "a" * (MAX_TENANT_ID_LENGTH + 1),
)


def test_the_shared_role_may_assume_the_tenant_access_role_as_any_well_formed_tenant(
    bridge: BridgeIam,
) -> None:
    # GIVEN the shared role passing exactly one session tag, tenant=<a valid tenant id>
    cases = {
        f"{action} tenant={tag}": assume_request(bridge, action, {"tenant": tag})
        for action in ASSUME_ACTIONS
        for tag in VALID_TENANT_TAGS
    }
    # WHEN the trust policy is evaluated THEN AssumeRole and TagSession are both allowed
    assert verdicts(cases) == dict.fromkeys(cases, ALLOWED)


def test_the_trust_policy_refuses_tenant_tags_that_cannot_be_tenant_ids(bridge: BridgeIam) -> None:
    # GIVEN the shared role passing tenant=<a value the trust policy must refuse>: empty,
    # wildcards, a policy variable, separators, a space, reserved prefixes
    cases = {
        f"{action} tenant={tag!r}": assume_request(bridge, action, {"tenant": tag})
        for action in ASSUME_ACTIONS
        for tag in REFUSED_TENANT_TAGS
    }
    # WHEN the trust policy is evaluated THEN every one is denied
    assert verdicts(cases) == dict.fromkeys(cases, DENIED)


def test_the_trust_policy_refuses_any_tag_set_but_the_single_tenant_tag(bridge: BridgeIam) -> None:
    # GIVEN the shared role passing a second tag, another key, a differently cased key, or none
    tag_sets: dict[str, dict[str, str]] = {
        "tenant and team": {"tenant": "contoso", "team": "data"},
        "team only": {"team": "contoso"},
        "Tenant": {"Tenant": "contoso"},
        "no tag": {},
    }
    cases = {
        f"{action} {name}": assume_request(bridge, action, tags)
        for action in ASSUME_ACTIONS
        for name, tags in tag_sets.items()
    }
    # WHEN the trust policy is evaluated THEN every one is denied
    assert verdicts(cases) == dict.fromkeys(cases, DENIED)


def test_no_principal_but_the_shared_role_may_assume_the_tenant_access_role(
    bridge: BridgeIam,
) -> None:
    # GIVEN other principals with the shared role's own identity policy, asking with a valid tag
    principals = {
        "another role": session_arn("SomeOtherRole", "s"),
        "the shared role's name in another account": session_arn(
            bridge.shared_role, "s", account=OTHER_ACCOUNT
        ),
        "the tenant-access role itself": bridge.access_session("contoso"),
        "a user": f"arn:{PARTITION}:iam::{ACCOUNT}:user/someone",
    }
    cases = {
        f"{action} {name}": assume_request(
            bridge, action, {"tenant": "contoso"}, principal=principal
        )
        for action in ASSUME_ACTIONS
        for name, principal in principals.items()
    }
    # WHEN the trust policy is evaluated THEN every one is denied
    assert verdicts(cases) == dict.fromkeys(cases, DENIED)


NOT_TENANT_IDS = (
    "Contoso",
    "CONTOSO",
    "contoso\u200b",  # a zero-width space
    "AWS-x",
    "Tenantkit-probe-a",
    "a\u00a0b",  # a no-break space
)
"""Values that are no tenant id; the upper-case ones the trust policy refuses too, the
others (other Unicode) it cannot express, so the role policy must hold on its own."""


def test_a_session_tagged_with_no_tenant_id_reaches_no_tenant(bridge: BridgeIam) -> None:
    # GIVEN sessions tagged with values that are no tenant id (defence in depth: the trust
    # policy refuses the upper-case ones, but IAM patterns cannot express every rule, e.g.
    # other Unicode), so the role policy must hold on its own
    cases = {
        f"{action} {tenant} tagged {tag!r}": data_request(
            bridge, bridge.access_session("other"), action, tenant, context=tagged(tag)
        )
        for action in DATA_ACTIONS
        for tenant in TENANTS
        for tag in NOT_TENANT_IDS
    }
    # WHEN they ask for every tenant's db user and secret
    # THEN they reach nothing: names and tags are compared exactly
    assert verdicts(cases) == dict.fromkeys(cases, DENIED)


# --- The shared compute role's identity policy -------------------------------------------------


def trusting_the_account() -> Policy:
    """A trust policy that delegates to identity policies (the account root as principal)."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:{PARTITION}:iam::{ACCOUNT}:root"},
                "Action": list(ASSUME_ACTIONS),
            }
        ],
    }


def test_the_shared_role_policy_grants_assuming_the_tenant_access_role_and_no_other_role(
    bridge: BridgeIam,
) -> None:
    # GIVEN roles whose trust policy leaves the decision to the caller's identity policy
    targets = {"tenant-access role": bridge.access_role, "another role": "SomeOtherRole"}
    cases = {
        f"{action} {name}": assume_request(
            bridge, action, {"tenant": "contoso"}, trust=trusting_the_account(), target=role
        )
        for action in ASSUME_ACTIONS
        for name, role in targets.items()
    }
    # ... and, as a control, the same requests without the shared role's identity policy
    cases |= {
        f"{action} tenant-access role, no identity policy": assume_request(
            bridge, action, {"tenant": "contoso"}, trust=trusting_the_account(), identity=[]
        )
        for action in ASSUME_ACTIONS
    }
    # WHEN they are evaluated THEN the shared role's policy grants the tenant-access role only
    assert verdicts(cases) == {
        name: ALLOWED if name.endswith(" tenant-access role") else DENIED for name in cases
    }


def test_the_shared_role_itself_reaches_no_tenant_data(bridge: BridgeIam) -> None:
    # GIVEN the shared role's own session (not the tenant-access role)
    cases = {
        f"{action} {tenant}": data_request(
            bridge, bridge.shared_session, action, tenant, identity=bridge.shared_identity
        )
        for action in DATA_ACTIONS
        for tenant in TENANTS
    }
    # WHEN it asks for any tenant's db user or secret THEN it is denied
    assert verdicts(cases) == dict.fromkeys(cases, DENIED)


# --- Token vending: the session policy ---------------------------------------------------------


def over_broad_identity_policy() -> Policy:
    """A deliberately wrong role policy: every db user of the cluster, every tenant secret."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "rds-db:connect",
                "Resource": f"arn:{PARTITION}:rds-db:{REGION}:{ACCOUNT}:dbuser:"
                f"{CLUSTER_RESOURCE_ID}/*",
            },
            {
                "Effect": "Allow",
                "Action": ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"],
                "Resource": f"arn:{PARTITION}:secretsmanager:{REGION}:{ACCOUNT}:secret:tenantkit/*",
            },
        ],
    }


VENDED_ACTIONS = ("rds-db:connect", "secretsmanager:GetSecretValue")


def test_the_contoso_session_policy_keeps_an_over_broad_role_policy_away_from_fabrikam(
    bridge: BridgeIam,
) -> None:
    # GIVEN a session tagged contoso whose role policy reaches every tenant
    session = bridge.access_session("contoso")
    broad = [over_broad_identity_policy()]

    def request(action: str, tenant: str, session_policy: Policy | None) -> Request:
        return data_request(
            bridge,
            session,
            action,
            tenant,
            context=tagged("contoso"),
            identity=broad,
            session_policy=session_policy,
        )

    # WHEN it was vended with contoso's session policy, or (control) without one
    cases = {
        f"{action} {tenant} vended": request(action, tenant, vended_session_policy("contoso"))
        for action in VENDED_ACTIONS
        for tenant in TENANTS
    }
    cases |= {
        f"{action} fabrikam not vended": request(action, "fabrikam", None)
        for action in VENDED_ACTIONS
    }
    # THEN the session policy alone keeps fabrikam out; without it the broad policy lets it in
    assert verdicts(cases) == {f"{action} contoso vended": ALLOWED for action in VENDED_ACTIONS} | {
        f"{action} fabrikam vended": DENIED for action in VENDED_ACTIONS
    } | {f"{action} fabrikam not vended": ALLOWED for action in VENDED_ACTIONS}


def test_a_wrong_session_tag_under_contosos_session_policy_opens_no_tenant(
    bridge: BridgeIam,
) -> None:
    # GIVEN the deployed role policy and contoso's session policy, with the session tagged
    # fabrikam by mistake, or (control) tagged contoso as the library does
    def request(action: str, tenant: str, tag: str) -> Request:
        return data_request(
            bridge,
            bridge.access_session(tag),
            action,
            tenant,
            context=tagged(tag),
            session_policy=vended_session_policy("contoso"),
        )

    cases = {
        f"{action} {tenant} tagged {tag}": request(action, tenant, tag)
        for action in VENDED_ACTIONS
        for tenant in TENANTS
        for tag in TENANTS
    }
    # WHEN they are evaluated THEN only contoso, tagged contoso, gets in: each policy refuses
    # what the other would let through
    assert verdicts(cases) == {
        name: ALLOWED if name.endswith("contoso tagged contoso") else DENIED for name in cases
    }


# --- The host key: what decrypting a tenant's secret needs ------------------------------------

SECRETS_MANAGER = f"secretsmanager.{REGION}.amazonaws.com"


def decrypt_request(
    bridge: BridgeIam,
    principal: str,
    tenant: str,
    *,
    tag: str | None,
    via: str = SECRETS_MANAGER,
    identity: Sequence[Policy] | None = None,
    session_policy: Policy | None = None,
) -> Request:
    """kms:Decrypt of the bridge key as Secrets Manager asks for it when `principal` reads
    `tenant`'s secret: the secret's ARN in the encryption context, via Secrets Manager."""
    return Request(
        principal=principal,
        action="kms:Decrypt",
        resource=bridge.key_arn,
        context={
            simulated_key("kms:EncryptionContext:SecretARN"): bridge.secrets[tenant].arn,
            "kms:ViaService": via,
            **(tagged(tag) if tag else {}),
        },
        identity=bridge.access_identity if identity is None else identity,
        resource_policy=bridge.key_policy,
        session_policy=None
        if session_policy is None
        else with_global_resource_tag_keys(session_policy),
    )


def test_a_session_tagged_contoso_decrypts_only_contosos_secret_and_only_through_secrets_manager(
    bridge: BridgeIam,
) -> None:
    # GIVEN sessions of the tenant-access role tagged contoso, fabrikam or nothing
    cases = {
        f"{tenant} tagged {tag}": decrypt_request(
            bridge, bridge.access_session(tag), tenant, tag=tag
        )
        for tenant in TENANTS
        for tag in (*TENANTS, None)
    }
    # ... and contoso's session calling KMS itself rather than through Secrets Manager
    cases["contoso tagged contoso, direct"] = decrypt_request(
        bridge,
        bridge.access_session("contoso"),
        "contoso",
        tag="contoso",
        via=f"s3.{REGION}.amazonaws.com",
    )
    # WHEN each asks KMS to decrypt a tenant's secret with the host key
    # THEN only a session tagged with that tenant, through Secrets Manager, may
    assert verdicts(cases) == {
        "contoso tagged contoso": ALLOWED,
        "contoso tagged fabrikam": DENIED,
        "contoso tagged None": DENIED,
        "fabrikam tagged contoso": DENIED,
        "fabrikam tagged fabrikam": ALLOWED,
        "fabrikam tagged None": DENIED,
        "contoso tagged contoso, direct": DENIED,
    }


def test_the_contoso_session_policy_decrypts_contosos_secret_and_not_fabrikams(
    bridge: BridgeIam,
) -> None:
    # GIVEN a contoso session vended with contoso's session policy, under the deployed role
    # policy or (control) under a role policy that would decrypt anything with the key
    broad: Policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "kms:Decrypt", "Resource": bridge.key_arn}],
    }
    session = bridge.access_session("contoso")
    cases = {
        f"{tenant} {label}": decrypt_request(
            bridge,
            session,
            tenant,
            tag="contoso",
            identity=identity,
            session_policy=vended_session_policy("contoso"),
        )
        for tenant in TENANTS
        for label, identity in (("deployed", None), ("broad", [broad]))
    }
    # WHEN it decrypts each tenant's secret THEN the session policy keeps fabrikam's closed
    assert verdicts(cases) == {
        "contoso deployed": ALLOWED,
        "contoso broad": ALLOWED,
        "fabrikam deployed": DENIED,
        "fabrikam broad": DENIED,
    }


def test_the_shared_role_itself_cannot_decrypt_any_tenants_secret(bridge: BridgeIam) -> None:
    cases = {
        tenant: decrypt_request(
            bridge, bridge.shared_session, tenant, tag=None, identity=bridge.shared_identity
        )
        for tenant in TENANTS
    }
    assert verdicts(cases) == dict.fromkeys(TENANTS, DENIED)


# --- What the simulator cannot do yet ----------------------------------------------------------


def test_the_simulator_still_lacks_the_secrets_manager_resource_tag_key(bridge: BridgeIam) -> None:
    # GIVEN the role policy as synthesized (secretsmanager:ResourceTag/...) and a secret's tags
    # under that key
    secret = bridge.secrets["contoso"]
    request = Request(
        principal=bridge.access_session("contoso"),
        action="secretsmanager:GetSecretValue",
        resource=secret.arn,
        context={**tagged("contoso"), "secretsmanager:ResourceTag/tenant": secret.tags["tenant"]},
        identity=bridge.access_identity_as_synthesized,
    )
    # WHEN it is simulated
    (answer,) = run_simulator([request])
    # THEN the simulator fails on the key: once it passes, drop with_global_resource_tag_keys
    assert answer["result"] == "Error"
    assert "secretsmanager:resourcetag/tenant not found" in answer["errors"]["message"].lower()


def test_the_simulator_still_ignores_the_kms_encryption_context_key(bridge: BridgeIam) -> None:
    # GIVEN a decrypt request carrying the encryption context under its real key
    request = Request(
        principal=bridge.access_session("contoso"),
        action="kms:Decrypt",
        resource=bridge.key_arn,
        context={
            "kms:EncryptionContext:SecretARN": bridge.secrets["contoso"].arn,
            "kms:ViaService": SECRETS_MANAGER,
            **tagged("contoso"),
        },
        identity=bridge.access_identity_as_synthesized,
        resource_policy=bridge.key_policy,
    )
    # WHEN it is simulated
    (answer,) = run_simulator([request])
    # THEN the simulator drops the key: once it keeps it, drop the rename in simulated_key
    assert answer["ignoredContextKeys"] == ["kms:EncryptionContext:SecretARN"]


# --- A strict pool: the same tenant-access role, for each tenant's own pool login --------------

POOL_TENANTS = ("tailspin", "litware")


@dataclass(frozen=True)
class StrictPoolIam:
    """A strict pool host's IAM as deployed, in concrete values."""

    shared_role: str
    access_role: str
    access_trust: Policy
    access_identity: list[Policy]
    shared_identity: list[Policy]
    runtime_secret: Secret
    """The shared runtime login's secret (tagged tenant=pool)."""

    def access_session(self, tenant_tag: str | None) -> str:
        return session_arn(self.access_role, f"tenant-{tenant_tag or 'untagged'}")


@pytest.fixture(scope="module")
def strict_pool_iam(strict_pool: Synth) -> StrictPoolIam:
    template = strict_pool.raw(POOL_STACK)
    resolve = Resolver.for_template(template)
    shared = only_resource(template, "SharedComputeRole", "AWS::IAM::Role")
    access = only_resource(template, "TenantAccessRole", "AWS::IAM::Role")
    (runtime,) = [
        r["Properties"]
        for r in template["Resources"].values()
        if r["Type"] == "AWS::SecretsManager::Secret"
        and r["Properties"].get("Name") == "tenantkit/pool/app"
    ]
    return StrictPoolIam(
        shared_role=shared,
        access_role=access,
        access_trust=resolve(
            template["Resources"][access]["Properties"]["AssumeRolePolicyDocument"]
        ),
        access_identity=identity_policies(template, access, resolve),
        shared_identity=identity_policies(template, shared, resolve),
        runtime_secret=Secret(
            arn=f"arn:{PARTITION}:secretsmanager:{REGION}:{ACCOUNT}:secret:"
            f"tenantkit/pool/app{SECRET_ARN_SUFFIX}",
            tags={tag["Key"]: tag["Value"] for tag in runtime["Tags"]},
        ),
    )


def db_user(user: str) -> str:
    return f"arn:{PARTITION}:rds-db:{REGION}:{ACCOUNT}:dbuser:{CLUSTER_RESOURCE_ID}/{user}"


def pool_requests(
    principal: str,
    identity: Sequence[Policy],
    *,
    context: Mapping[str, str] | None = None,
    session_policy: Policy | None = None,
    secret: Secret | None = None,
) -> dict[str, Request]:
    """Connecting as each pool tenant's login, as the shared runtime's IAM user and as the
    bridge-form IAM user of a tenant; reading the runtime secret (given `secret`)."""
    users = {
        **{f"connect {tenant}": tenant_names(tenant).pool_login for tenant in POOL_TENANTS},
        "connect the shared runtime user": "tenantkit_pool_iam",
        "connect tailspin's bridge-form user": tenant_names("tailspin").iam_user,
    }
    cases = {
        name: Request(
            principal=principal,
            action="rds-db:connect",
            resource=db_user(user),
            context=dict(context or {}),
            identity=identity,
            session_policy=session_policy,
        )
        for name, user in users.items()
    }
    if secret is not None:
        cases["read the runtime secret"] = Request(
            principal=principal,
            action="secretsmanager:GetSecretValue",
            resource=secret.arn,
            context={**(context or {}), **secret.context()},
            identity=identity,
            session_policy=session_policy,
        )
    return cases


def test_a_strict_pool_session_tagged_tailspin_connects_only_as_tailspins_pool_login(
    strict_pool_iam: StrictPoolIam,
) -> None:
    iam = strict_pool_iam
    cases = pool_requests(
        iam.access_session("tailspin"),
        iam.access_identity,
        context=tagged("tailspin"),
        secret=iam.runtime_secret,
    )
    assert verdicts(cases) == {
        "connect tailspin": ALLOWED,
        "connect litware": DENIED,
        "connect the shared runtime user": DENIED,
        "connect tailspin's bridge-form user": DENIED,
        "read the runtime secret": DENIED,
    }


def test_a_strict_pool_session_tagged_litware_reaches_litware_so_the_denials_are_real(
    strict_pool_iam: StrictPoolIam,
) -> None:
    iam = strict_pool_iam
    cases = pool_requests(
        iam.access_session("litware"), iam.access_identity, context=tagged("litware")
    )
    assert verdicts(cases)["connect litware"] == ALLOWED


def test_a_strict_pool_session_without_a_tag_or_tagged_pool_reaches_nothing(
    strict_pool_iam: StrictPoolIam,
) -> None:
    # `pool` is a reserved tenant id that the trust policy's patterns do not refuse: the
    # runtime secret is tagged tenant=pool, and the role has no secret statement at all
    iam = strict_pool_iam
    untagged = pool_requests(
        iam.access_session(None), iam.access_identity, secret=iam.runtime_secret
    )
    pool = pool_requests(
        iam.access_session("pool"),
        iam.access_identity,
        context=tagged("pool"),
        secret=iam.runtime_secret,
    )
    assert verdicts(untagged) == dict.fromkeys(untagged, DENIED)
    assert verdicts(pool) == dict.fromkeys(pool, DENIED)


def test_a_strict_pools_shared_role_reaches_no_login_and_may_assume_the_access_role(
    strict_pool_iam: StrictPoolIam,
) -> None:
    iam = strict_pool_iam
    shared = session_arn(iam.shared_role, "shared-function")
    cases = pool_requests(shared, iam.shared_identity, secret=iam.runtime_secret)
    assert verdicts(cases) == dict.fromkeys(cases, DENIED)
    assume = {
        action: Request(
            principal=shared,
            action=action,
            resource=role_arn(iam.access_role),
            context={"aws:RequestTag/tenant": "tailspin", "aws:TagKeys": ["tenant"]},
            identity=iam.shared_identity,
            resource_policy=iam.access_trust,
        )
        for action in ASSUME_ACTIONS
    }
    assert verdicts(assume) == dict.fromkeys(ASSUME_ACTIONS, ALLOWED)


def test_the_tailspin_pool_session_policy_keeps_an_over_broad_role_away_from_litware(
    strict_pool_iam: StrictPoolIam,
) -> None:
    iam = strict_pool_iam
    vended = tenant_session_policy(
        "tailspin",
        partition=PARTITION,
        region=REGION,
        account=ACCOUNT,
        db_resource_id=CLUSTER_RESOURCE_ID,
        db_user=tenant_names("tailspin").pool_login,
    )
    cases = pool_requests(
        iam.access_session("tailspin"),
        [over_broad_identity_policy()],
        context=tagged("tailspin"),
        session_policy=vended,
    )
    assert verdicts(cases) == {
        "connect tailspin": ALLOWED,
        "connect litware": DENIED,
        "connect the shared runtime user": DENIED,
        "connect tailspin's bridge-form user": DENIED,
    }
