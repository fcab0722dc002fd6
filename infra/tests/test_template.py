"""Checks on infra/cloudformation/vipfleet.yaml that cfn-lint does not make.

Each rule is a small function over plain data, tested on the real template and
on a deliberately bad snippet, so that a rule that stopped checking would fail.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import SAMPLE_PARAMETERS, TEMPLATE_PATH, load_template, render_user_data

import sync_userdata

READ_ONLY_PREFIXES = ("Describe", "Get", "List")
AGENT_SRC = sync_userdata.REPO / "services" / "agent" / "src"
# The node role's allow-list: every action the agent's SDK calls need, and why.
# test_node_role_grants_exactly_the_allow_list keeps the role equal to it;
# test_allow_list_mirrors_the_agent_source keeps it equal to the agent's calls.
NODE_ACTIONS = {
    "ec2:DescribeRouteTables": "route read-back, route tables exist (aws/ec2.rs)",
    "ec2:DescribeVpcs": "VIPs lie outside the VPC's CIDRs (aws/ec2.rs)",
    "ec2:CreateRoute": "a VIP's first route in a table (aws/ec2.rs)",
    "ec2:ReplaceRoute": "move a VIP's route to another node's ENI (aws/ec2.rs)",
    "ec2:DeleteRoute": "the route of a VIP removed from the fleet",
    "ec2:ModifyNetworkInterfaceAttribute": "source/destination check off (aws/ec2.rs)",
    "dynamodb:GetItem": "read one lease item (aws/dynamo.rs)",
    "dynamodb:PutItem": "create an item",
    "dynamodb:UpdateItem": "heartbeat, claim, hand-off; the takeover's shard part (aws/dynamo.rs)",
    "dynamodb:DeleteItem": "retire the shard item of a VIP removed from the fleet",
    "dynamodb:Scan": "read nodes and shards (aws/dynamo.rs)",
    "dynamodb:ConditionCheckItem": "the takeover's check of the old owner (aws/dynamo.rs)",
    "autoscaling:RecordLifecycleActionHeartbeat": "keep a long drain's hook waiting (lifecycle.rs)",
    "autoscaling:CompleteLifecycleAction": "finish the launch and drain hooks (lifecycle.rs)",
}
# What the bootstrap (not the agent) calls with the node role, and why.
BOOTSTRAP_ACTIONS = {
    "ssm:GetParameter": "the fleet's peer key, from Parameter Store (bootstrap.sh)",
    "kms:Decrypt": "that SecureString, when a customer managed key encrypts it",
}
# Announced calls the agent's source does not make yet. Once a call lands, the
# mirror test fails until its action leaves this set.
PENDING_CALLS: set = set()
# Files whose calls never run on a node: `vipfleet-agent init-table` is an
# operator's command (the stack creates the table), with its own credentials.
OPERATOR_ONLY = {"aws/dynamo_table.rs"}
SDK_CALL = re.compile(r"\bclient\s*\.\s*([a-z][a-z0-9_]*)\(\)")
SDK_CRATE = re.compile(r"\b(aws_sdk_ec2|aws_sdk_dynamodb|aws_sdk_autoscaling)\b")
SDK_CRATES = {"aws_sdk_ec2": "ec2", "aws_sdk_dynamodb": "dynamodb", "aws_sdk_autoscaling": "autoscaling"}
TRANSACTION_PARTS = {"ConditionCheck": "ConditionCheckItem", "Update": "UpdateItem", "Put": "PutItem", "Delete": "DeleteItem"}
CFG_TEST_MODULE = re.compile(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{")
# EC2 caps user data at 16 KiB before base64.
USER_DATA_LIMIT_BYTES = 16 * 1024


# ---------------------------------------------------------------- rule functions


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def is_read_only(action: str) -> bool:
    _, _, name = action.partition(":")
    return name.startswith(READ_ONLY_PREFIXES) and "*" not in name.rstrip("*")


def wildcard_mutations(statement: dict) -> list[str]:
    """Mutating actions that a statement allows on every resource."""
    if statement.get("Effect") != "Allow":
        return []
    if "NotAction" in statement:
        return ["NotAction"]
    resources = as_list(statement.get("Resource", [])) + as_list(statement.get("NotResource", []))
    if "NotResource" not in statement and "*" not in resources:
        return []
    return [a for a in as_list(statement.get("Action", [])) if not (isinstance(a, str) and is_read_only(a))]


def iam_statements(template: dict) -> list[tuple[str, dict]]:
    """(resource name, statement) for every identity policy in the template."""
    out = []
    for name, resource in template["Resources"].items():
        props = resource.get("Properties", {})
        documents = []
        if resource["Type"] in ("AWS::IAM::Role", "AWS::IAM::User", "AWS::IAM::Group"):
            documents = [p["PolicyDocument"] for p in props.get("Policies", [])]
        elif resource["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy", "AWS::IAM::RolePolicy"):
            documents = [props["PolicyDocument"]]
        for document in documents:
            out.extend((name, s) for s in as_list(document["Statement"]))
    return out


def imds_v2_problems(launch_template_data: dict) -> list[str]:
    options = launch_template_data.get("MetadataOptions", {})
    problems = []
    if options.get("HttpTokens") != "required":
        problems.append("HttpTokens is not 'required'")
    if options.get("HttpPutResponseHopLimit") not in (1, 2):
        problems.append("HttpPutResponseHopLimit is not 1 or 2")
    if options.get("HttpEndpoint", "enabled") != "enabled":
        problems.append("IMDS is disabled but the agent needs it")
    return problems


def hooks(asg_properties: dict, transition: str) -> list[dict]:
    return [
        h
        for h in asg_properties.get("LifecycleHookSpecificationList", [])
        if h.get("LifecycleTransition") == f"autoscaling:EC2_INSTANCE_{transition}"
    ]


def termination_hooks(asg_properties: dict) -> list[dict]:
    return hooks(asg_properties, "TERMINATING")


def launch_hooks(asg_properties: dict) -> list[dict]:
    return hooks(asg_properties, "LAUNCHING")


def table_problems(table_properties: dict) -> list[str]:
    problems = []
    ttl = table_properties.get("TimeToLiveSpecification", {})
    if not (ttl.get("Enabled") is True and ttl.get("AttributeName") == "expires_at"):
        problems.append("TTL on expires_at is not enabled")
    pitr = table_properties.get("PointInTimeRecoverySpecification", {})
    if pitr.get("PointInTimeRecoveryEnabled") is not True:
        problems.append("point-in-time recovery is off")
    if table_properties.get("KeySchema") != [{"AttributeName": "pk", "KeyType": "HASH"}]:
        problems.append("key schema is not pk (HASH) alone")
    if {"AttributeName": "pk", "AttributeType": "S"} not in table_properties.get("AttributeDefinitions", []):
        problems.append("pk is not a string attribute")
    return problems


def ingress_problems(ingress: list[dict], allowed: dict[object, object]) -> list[str]:
    """Every rule must open one allowed port to the source allowed for it."""
    problems = []
    for rule in ingress:
        port = rule.get("FromPort")
        if rule.get("ToPort") != port:
            problems.append(f"port range {port}-{rule.get('ToPort')}")
        elif port not in allowed:
            problems.append(f"unexpected port {port}")
        elif rule.get("CidrIp") != allowed[port] or "CidrIpv6" in rule:
            problems.append(f"port {port} open to {rule.get('CidrIp') or rule.get('CidrIpv6')}")
    return problems


def role_actions(template: dict, role: str = "NodeRole") -> set[str]:
    """Every action the role's inline policies allow (managed policies are not read)."""
    actions = set()
    for name, s in iam_statements(template):
        if name == role and s.get("Effect") == "Allow":
            actions.update(as_list(s.get("Action", [])))
    return actions


def strip_test_modules(source: str) -> str:
    """Rust source without its `#[cfg(test)] mod name { ... }` blocks (braces counted)."""
    out, rest = [], source
    while (match := CFG_TEST_MODULE.search(rest)) is not None:
        out.append(rest[: match.start()])
        depth, i = 1, match.end()
        while depth and i < len(rest):
            depth += {"{": 1, "}": -1}.get(rest[i], 0)
            i += 1
        rest = rest[i:]
    return "".join(out) + rest


def sdk_actions(source: str) -> set[str]:
    """IAM actions for the SDK calls in one Rust file: `client.operation()` on the
    file's one SDK client, plus the parts of a DynamoDB transaction, which IAM
    authorizes part by part (`TransactWriteItems` is no IAM action)."""
    source = strip_test_modules(source)
    operations = set(SDK_CALL.findall(source))
    if not operations:
        return set()
    services = {SDK_CRATES[crate] for crate in SDK_CRATE.findall(source)}
    assert len(services) == 1, f"SDK calls {sorted(operations)} with clients of {sorted(services) or 'no SDK'}"
    service = services.pop()
    pascal = lambda op: "".join(word.capitalize() for word in op.split("_"))
    actions = {f"{service}:{pascal(op)}" for op in operations - {"transact_write_items"}}
    if "transact_write_items" in operations:
        actions |= {f"dynamodb:{action}" for part, action in TRANSACTION_PARTS.items() if f"{part}::builder(" in source}
    return actions


def agent_actions(src: Path = AGENT_SRC) -> dict[str, set[str]]:
    """The IAM actions of every SDK call the agent's `run` path makes, by file."""
    found = {}
    for path in sorted(src.rglob("*.rs")):
        rel = str(path.relative_to(src))
        if rel in OPERATOR_ONLY or path.name.endswith("_tests.rs"):
            continue
        actions = sdk_actions(path.read_text())
        if actions:
            found[rel] = actions
    return found


# ------------------------------------------------------------ the rules, checked


def test_rules_catch_bad_snippets():
    assert wildcard_mutations({"Effect": "Allow", "Action": "ec2:ReplaceRoute", "Resource": "*"}) == [
        "ec2:ReplaceRoute"
    ]
    assert wildcard_mutations({"Effect": "Allow", "Action": ["ec2:*"], "Resource": ["*"]}) == ["ec2:*"]
    assert wildcard_mutations({"Effect": "Allow", "Action": "ec2:Describe*", "NotResource": "arn:x"}) == []
    assert wildcard_mutations({"Effect": "Allow", "Action": "dynamodb:PutItem", "NotResource": "arn:x"}) == [
        "dynamodb:PutItem"
    ]
    assert wildcard_mutations({"Effect": "Allow", "NotAction": "iam:*", "Resource": "arn:x"}) == ["NotAction"]
    assert wildcard_mutations({"Effect": "Allow", "Action": ["ec2:DescribeVpcs"], "Resource": "*"}) == []
    assert wildcard_mutations({"Effect": "Deny", "Action": "ec2:*", "Resource": "*"}) == []
    assert not is_read_only("ec2:Get*Attribute*") and is_read_only("ec2:Describe*")

    assert imds_v2_problems({"MetadataOptions": {"HttpTokens": "optional", "HttpPutResponseHopLimit": 1}})
    assert imds_v2_problems({})
    assert imds_v2_problems({"MetadataOptions": {"HttpTokens": "required", "HttpPutResponseHopLimit": 3}})
    assert not imds_v2_problems({"MetadataOptions": {"HttpTokens": "required", "HttpPutResponseHopLimit": 2}})

    launching = {"LifecycleTransition": "autoscaling:EC2_INSTANCE_LAUNCHING"}
    assert termination_hooks({"LifecycleHookSpecificationList": [launching]}) == []
    assert termination_hooks({}) == []
    assert launch_hooks({"LifecycleHookSpecificationList": [launching]}) == [launching]
    assert launch_hooks({}) == []

    good_table = {
        "TimeToLiveSpecification": {"AttributeName": "expires_at", "Enabled": True},
        "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
    }
    assert table_problems(good_table) == []
    assert table_problems({**good_table, "TimeToLiveSpecification": {"AttributeName": "ttl", "Enabled": True}})
    assert table_problems({**good_table, "PointInTimeRecoverySpecification": {}})

    allowed = {80: "vpc", 9180: "ops"}
    assert ingress_problems([{"FromPort": 80, "ToPort": 80, "CidrIp": "vpc"}], allowed) == []
    assert ingress_problems([{"FromPort": 80, "ToPort": 80, "CidrIp": "0.0.0.0/0"}], allowed)
    assert ingress_problems([{"FromPort": 22, "ToPort": 22, "CidrIp": "vpc"}], allowed)
    assert ingress_problems([{"FromPort": 0, "ToPort": 65535, "CidrIp": "vpc"}], allowed)


    rust = """
        use aws_sdk_dynamodb::Client;
        async fn f(&self) { self.client
            .transact_write_items().send().await; let c = ConditionCheck::builder(); let u = Update::builder();
            self.client.get_item().send().await; }
        #[cfg(test)]
        mod tests { fn t() { if x { client.delete_table() } } }
        fn g(&self) { self.client.scan() }
    """
    assert sdk_actions(rust) == {"dynamodb:GetItem", "dynamodb:Scan", "dynamodb:ConditionCheckItem", "dynamodb:UpdateItem"}
    assert sdk_actions("fn f() { client.describe_vpcs() } // aws_sdk_ec2") == {"ec2:DescribeVpcs"}
    assert sdk_actions("fn f() { let x = 1; }") == set()
    with pytest.raises(AssertionError):
        sdk_actions("use aws_sdk_ec2; use aws_sdk_dynamodb; fn f() { client.scan() }")
    role = {
        "Resources": {
            "NodeRole": {
                "Type": "AWS::IAM::Role",
                "Properties": {"Policies": [{"PolicyDocument": {"Statement": [
                    {"Effect": "Allow", "Action": ["ec2:DescribeInstances", "dynamodb:Scan"], "Resource": "*"},
                    {"Effect": "Deny", "Action": "ec2:*", "Resource": "*"},
                ]}}]},
            }
        }
    }
    assert role_actions(role) == {"ec2:DescribeInstances", "dynamodb:Scan"}
    assert role_actions(role) - set(NODE_ACTIONS) == {"ec2:DescribeInstances"}


# ------------------------------------------------------------ the real template


def test_no_mutating_action_on_every_resource(template):
    statements = iam_statements(template)
    assert len(statements) >= 5, "the node role's policy was not found"
    bad = {f"{name}/{s.get('Sid')}": wildcard_mutations(s) for name, s in statements if wildcard_mutations(s)}
    assert bad == {}


def statement(template: dict, sid: str) -> dict:
    matches = [s for _, s in iam_statements(template) if s.get("Sid") == sid]
    assert len(matches) == 1, f"expected one statement {sid}"
    return matches[0]


def test_route_writes_are_scoped_to_each_route_table_slot(template):
    route = statement(template, "RouteWrites")
    assert sorted(as_list(route["Action"])) == ["ec2:CreateRoute", "ec2:DeleteRoute", "ec2:ReplaceRoute"]
    resources = route["Resource"]
    # One ARN slot per route table the parameter's pattern allows.
    pattern = template["Parameters"]["RouteTableIds"]["AllowedPattern"]
    max_tables = 1 + int(re.search(r"\{0,(\d+)\}", pattern).group(1))
    assert len(resources) == max_tables
    for index, resource in enumerate(resources):
        if index:
            condition, resource, no_value = resource["Fn::If"]
            assert condition == f"RouteTable{index + 1}" and no_value == {"Ref": "AWS::NoValue"}
            assert template["Conditions"][condition]["Fn::Not"][0]["Fn::Equals"][1]["Fn::Select"][0] == index
        arn, names = resource["Fn::Sub"]
        assert arn.endswith(":route-table/${Id}") and arn.startswith("arn:${AWS::Partition}:ec2:${AWS::Region}:")
        assert names["Id"]["Fn::Select"][0] == index


def test_node_role_grants_exactly_the_allow_list(template):
    actions = role_actions(template)
    allowed = set(NODE_ACTIONS) | set(BOOTSTRAP_ACTIONS)
    assert actions - allowed == set(), "actions neither the agent nor the bootstrap calls"
    assert allowed - actions == set(), "calls the role does not allow"


def test_the_peer_key_is_readable_and_decryptable_alone(template):
    """GetParameter on the one parameter; Decrypt only through SSM and only for it."""
    parameter_arn = "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter${PeerKeyParameter}"
    get = statement(template, "PeerKey")
    assert get["Action"] == "ssm:GetParameter"
    assert get["Resource"] == {"Fn::Sub": parameter_arn}
    assert "Condition" not in get
    decrypt = statement(template, "PeerKeyDecrypt")
    assert decrypt["Action"] == "kms:Decrypt"
    assert decrypt["Resource"] == {"Fn::Sub": "arn:${AWS::Partition}:kms:${AWS::Region}:${AWS::AccountId}:key/*"}
    assert decrypt["Condition"] == {
        "StringEquals": {
            "kms:ViaService": {"Fn::Sub": "ssm.${AWS::Region}.amazonaws.com"},
            "kms:EncryptionContext:PARAMETER_ARN": {"Fn::Sub": parameter_arn},
        }
    }
    # The parameter's name starts with a slash: the ARN is ".../parameter/a/b".
    parameter = template["Parameters"]["PeerKeyParameter"]
    assert re.fullmatch(parameter["AllowedPattern"], parameter["Default"])
    assert parameter["Default"].startswith("/")


def test_allow_list_mirrors_the_agent_source():
    by_file = agent_actions()
    called = set().union(*by_file.values())
    # Sanity: the scan sees the calls it must (one per service at least).
    assert {"ec2:ReplaceRoute", "dynamodb:UpdateItem", "autoscaling:CompleteLifecycleAction"} <= called, by_file
    assert called - set(NODE_ACTIONS) == set(), f"the agent calls these but the allow-list lacks them: {by_file}"
    landed = PENDING_CALLS & called
    assert landed == set(), f"now called by the agent: remove {sorted(landed)} from PENDING_CALLS"
    assert set(NODE_ACTIONS) - called == PENDING_CALLS, "allow-listed actions the agent never calls"


def test_source_dest_check_is_limited_to_that_attribute_and_the_callers_own_instance(template):
    modify = statement(template, "SourceDestCheck")
    assert modify["Action"] == "ec2:ModifyNetworkInterfaceAttribute"
    assert modify["Resource"]["Fn::Sub"].endswith(":network-interface/*")
    assert modify["Condition"] == {
        "StringEquals": {
            "aws:ResourceTag/vipfleet:stack": {"Ref": "AWS::StackName"},
            "ec2:Attribute/SourceDestCheck": "false",
        }
    }
    own = statement(template, "SourceDestCheckOwnInstance")
    assert own["Action"] == "ec2:ModifyNetworkInterfaceAttribute"
    assert own["Resource"]["Fn::Sub"].endswith(":instance/*")
    # ${!...} is Fn::Sub's escape: IAM receives the policy variable ${ec2:InstanceID}.
    assert own["Condition"]["ArnEquals"]["ec2:SourceInstanceARN"]["Fn::Sub"].endswith(":instance/${!ec2:InstanceID}")
    specs = template["Resources"]["NodeLaunchTemplate"]["Properties"]["LaunchTemplateData"]["TagSpecifications"]
    tagged = {
        s["ResourceType"]
        for s in specs
        if {"Key": "vipfleet:stack", "Value": {"Ref": "AWS::StackName"}} in s["Tags"]
    }
    assert "network-interface" in tagged


def test_lease_table_actions_only_on_the_table(template):
    lease = statement(template, "LeaseTable")
    assert lease["Resource"] == {"Fn::GetAtt": ["LeaseTable", "Arn"]}
    assert all(a.startswith("dynamodb:") for a in lease["Action"])


def test_lifecycle_actions_only_on_this_group(template):
    lifecycle = statement(template, "Lifecycle")
    group_name = template["Resources"]["NodeGroup"]["Properties"]["AutoScalingGroupName"]["Fn::Sub"]
    assert lifecycle["Resource"]["Fn::Sub"].endswith(f":autoScalingGroupName/{group_name}")
    assert sorted(lifecycle["Action"]) == [
        "autoscaling:CompleteLifecycleAction",
        "autoscaling:RecordLifecycleActionHeartbeat",
    ]


def test_imdsv2_required(template):
    data = template["Resources"]["NodeLaunchTemplate"]["Properties"]["LaunchTemplateData"]
    assert imds_v2_problems(data) == []


def the_hook(template: dict, transition: str, default_result: str, timeout_parameter: str) -> dict:
    """The group's one hook for `transition`, its result when nobody answers and
    its timeout parameter, which the user data passes to the bootstrap."""
    found = hooks(template["Resources"]["NodeGroup"]["Properties"], transition)
    assert len(found) == 1
    hook = found[0]
    assert hook["DefaultResult"] == default_result
    assert hook["HeartbeatTimeout"] == {"Ref": timeout_parameter}
    parameter = template["Parameters"][timeout_parameter]
    assert parameter["MinValue"] >= 60 and parameter["MaxValue"] <= 7200
    return hook


def test_termination_lifecycle_hook(template):
    hook = the_hook(template, "TERMINATING", "CONTINUE", "LifecycleHeartbeatTimeout")
    user_data = render_user_data(template, SAMPLE_PARAMETERS)
    assert f"export VIPFLEET_LIFECYCLE_HOOK_NAME='{hook['LifecycleHookName']}'" in user_data
    props = template["Resources"]["NodeGroup"]["Properties"]
    asg_name = props["AutoScalingGroupName"]["Fn::Sub"].replace("${AWS::StackName}", "vipfleet")
    assert f"export VIPFLEET_LIFECYCLE_ASG_NAME='{asg_name}'" in user_data
    # The bootstrap derives the agent's drain timeout from the hook's own timeout.
    timeout = SAMPLE_PARAMETERS["LifecycleHeartbeatTimeout"]
    assert f"export VIPFLEET_TERMINATION_HOOK_TIMEOUT='{timeout}'" in user_data


def test_launch_lifecycle_hook_gates_new_nodes(template):
    """New nodes wait for their agent's CONTINUE; silence means ABANDON, and
    replacements launch before they terminate, so a refresh waits for them."""
    hook = the_hook(template, "LAUNCHING", "ABANDON", "LaunchHookTimeout")
    props = template["Resources"]["NodeGroup"]["Properties"]
    assert hook["LifecycleHookName"] != termination_hooks(props)[0]["LifecycleHookName"]
    user_data = render_user_data(template, SAMPLE_PARAMETERS)
    assert f"export VIPFLEET_LIFECYCLE_LAUNCH_HOOK_NAME='{hook['LifecycleHookName']}'" in user_data
    assert f"export VIPFLEET_LAUNCH_HOOK_TIMEOUT='{SAMPLE_PARAMETERS['LaunchHookTimeout']}'" in user_data
    assert props["InstanceMaintenancePolicy"]["MinHealthyPercentage"] == 100
    assert props["InstanceMaintenancePolicy"]["MaxHealthyPercentage"] > 100


def test_lease_table_has_ttl_and_pitr(template):
    table = template["Resources"]["LeaseTable"]
    assert table["Type"] == "AWS::DynamoDB::Table"
    assert table_problems(table["Properties"]) == []
    assert table["Properties"]["BillingMode"] == {"Ref": "BillingMode"}


def test_security_group_opens_only_haproxy_to_vpc_and_dashboard_to_operators(template):
    ingress = template["Resources"]["NodeSecurityGroup"]["Properties"]["SecurityGroupIngress"]
    # Port values are Refs or numbers: key the allowed sources by their JSON form.
    allowed = {
        str({"Ref": "ServicePort"}): {"Ref": "VpcCidr"},
        "9180": {"Ref": "OperatorCidr"},
    }
    rules = [{**r, "FromPort": str(r["FromPort"]), "ToPort": str(r["ToPort"])} for r in ingress]
    assert ingress_problems(rules, allowed) == []
    assert len(rules) == 2


def test_peer_probes_are_open_between_nodes_only(template):
    """UDP on PeerPort, from the nodes' own group: no other source."""
    rules = [
        r["Properties"]
        for r in template["Resources"].values()
        if r["Type"] == "AWS::EC2::SecurityGroupIngress"
    ]
    assert rules == [
        {
            "Description": "vipfleet agent peer probes between nodes",
            "GroupId": {"Ref": "NodeSecurityGroup"},
            "IpProtocol": "udp",
            "FromPort": {"Ref": "PeerPort"},
            "ToPort": {"Ref": "PeerPort"},
            "SourceSecurityGroupId": {"Ref": "NodeSecurityGroup"},
        }
    ]
    assert template["Parameters"]["PeerPort"]["Default"] == 7946
    user_data = render_user_data(template, SAMPLE_PARAMETERS)
    assert f"export VIPFLEET_PEERS_PORT='{SAMPLE_PARAMETERS['PeerPort']}'" in user_data


def test_vpc_endpoints_for_nat_less_subnets(template):
    """Off by default; when on, an endpoint for every service the agent calls
    and for S3 (package repositories), HTTPS from the nodes only."""
    resources = template["Resources"]
    assert template["Parameters"]["CreateVpcEndpoints"]["Default"] == "false"
    endpoints = {name: r for name, r in resources.items() if r["Type"] == "AWS::EC2::VPCEndpoint"}
    assert all(r.get("Condition") == "VpcEndpoints" for r in endpoints.values())
    by_service = {
        r["Properties"]["ServiceName"]["Fn::Sub"].removeprefix("com.amazonaws.${AWS::Region}."): r["Properties"]
        for r in endpoints.values()
    }
    called = {action.partition(":")[0] for actions in agent_actions().values() for action in actions}
    # S3 for the package repositories; SSM for the bootstrap's peer key.
    needed = called | {"s3", "ssm"}
    assert needed <= set(by_service), f"no endpoint for {sorted(needed - set(by_service))}"
    for service, props in by_service.items():
        if service in ("s3", "dynamodb"):
            assert props["VpcEndpointType"] == "Gateway"
            assert props["RouteTableIds"]["Fn::If"][0] == "EndpointRouteTablesGiven"
        else:
            assert props["VpcEndpointType"] == "Interface" and props["PrivateDnsEnabled"] is True
            assert props["SubnetIds"] == {"Ref": "SubnetIds"}
            assert props["SecurityGroupIds"] == [{"Ref": "EndpointSecurityGroup"}]
    group = resources["EndpointSecurityGroup"]
    assert group["Condition"] == "VpcEndpoints"
    assert group["Properties"]["SecurityGroupIngress"] == [
        {
            "Description": "AWS API calls from vipfleet nodes",
            "IpProtocol": "tcp",
            "FromPort": 443,
            "ToPort": 443,
            "SourceSecurityGroupId": {"Ref": "NodeSecurityGroup"},
        }
    ]
    # The group references every endpoint, so its nodes launch after them.
    tags = resources["NodeGroup"]["Properties"]["Tags"]
    refs = [tag["Value"] for tag in tags if tag["Key"] == "vipfleet:endpoints"][0]["Fn::If"][1]["Fn::Join"][1]
    assert {r["Ref"] for r in refs} == set(endpoints)


def test_ami_defaults_to_amazon_linux_2023_via_ssm(template):
    image = template["Parameters"]["ImageId"]
    assert image["Type"] == "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>"
    assert image["Default"].startswith("/aws/service/ami-amazon-linux-latest/al2023-ami-")


def test_user_data_carries_the_infra_files():
    text = TEMPLATE_PATH.read_text()
    copies = sync_userdata.inlined(text)
    assert set(copies) == {"infra/bootstrap/bootstrap.sh", "infra/systemd/vipfleet-agent.service"}
    assert sync_userdata.stale(text) == []
    for rel, data in copies.items():
        assert data == (sync_userdata.REPO / rel).read_bytes(), rel


def test_sync_check_notices_a_stale_copy(tmp_path):
    text = TEMPLATE_PATH.read_text()
    # A repo where the bootstrap changed but the template did not.
    for rel in sync_userdata.inlined(text):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes((sync_userdata.REPO / rel).read_bytes())
    (tmp_path / "infra/bootstrap/bootstrap.sh").write_text("#!/bin/sh\necho changed\n")
    assert sync_userdata.stale(text, tmp_path) == ["infra/bootstrap/bootstrap.sh"]
    refreshed = sync_userdata.render(text, tmp_path)
    assert sync_userdata.stale(refreshed, tmp_path) == []
    assert sync_userdata.inlined(refreshed)["infra/bootstrap/bootstrap.sh"] == b"#!/bin/sh\necho changed\n"


def test_user_data_fits_the_ec2_limit(template):
    # Long but valid parameter values: eight route tables, many VIPs and backends.
    values = dict(SAMPLE_PARAMETERS)
    values["RouteTableIds"] = ",".join(f"rtb-{i:017x}" for i in range(8))
    values["Vips"] = ",".join(f"10.200.{i // 250}.{i % 250 + 1}/32" for i in range(64))
    values["BackendServers"] = ",".join(f"backend-{i}.internal.example:8080" for i in range(32))
    values["AgentArtifactUrl"] = "https://artifacts.example.com/" + "x" * 200
    values["AWS::StackName"] = "s" * 64
    size = len(render_user_data(template, values).encode())
    assert size < USER_DATA_LIMIT_BYTES, f"user data is {size} bytes"


def test_template_parses_with_cfn_lint_decoder():
    template = load_template()
    assert {"LeaseTable", "NodeRole", "NodeInstanceProfile", "NodeSecurityGroup", "NodeLaunchTemplate", "NodeGroup"} <= set(
        template["Resources"]
    )
    assert {"LeaseTableName", "AutoScalingGroupName", "DashboardUrlPattern"} <= set(template["Outputs"])


@pytest.mark.parametrize(
    "parameter,good,bad",
    [
        ("RouteTableIds", "rtb-0a,rtb-1b", "rtb-0a, rtb-1b"),
        ("RouteTableIds", ",".join(["rtb-0a"] * 8), ",".join(["rtb-0a"] * 9)),
        ("Vips", "10.200.0.1/32,10.200.0.2/32", "10.200.0.1/32\"]"),
        ("AgentArtifactUrl", "https://example.com/agent", "https://example.com/a'gent"),
        ("AgentArtifactSha256", "a" * 64, "a" * 63),
        ("BackendServers", "", "10.0.0.1"),
        ("EndpointRouteTableIds", "", "rtb-0a, rtb-1b"),
        ("EndpointRouteTableIds", "rtb-0a,rtb-1b", "subnet-0a"),
        ("PeerKeyParameter", "/vipfleet/prod/peer-key", "vipfleet/peer-key"),
        ("PeerKeyParameter", "/vipfleet/peer-key", "/vipfleet/peer key'"),
    ],
)
def test_parameter_patterns(template, parameter, good, bad):
    # The values end up in shell quotes and TOML strings on the node.
    pattern = re.compile(template["Parameters"][parameter]["AllowedPattern"])
    assert pattern.fullmatch(good)
    assert not pattern.fullmatch(bad)


# ------------------------------------------------------------ CloudWatch alarms

ALARM_ACTIONS = {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}


def alarm_metrics(alarm_properties: dict) -> set[tuple[str, str, tuple]]:
    """(namespace, metric, dimensions) of every metric an alarm reads, directly or in metric math."""
    found = set()
    stats = [m["MetricStat"]["Metric"] for m in alarm_properties.get("Metrics", []) if "MetricStat" in m]
    if "MetricName" in alarm_properties:
        stats.append(alarm_properties)
    for metric in stats:
        dimensions = tuple(
            (d["Name"], json.dumps(d["Value"], sort_keys=True)) for d in metric.get("Dimensions", [])
        )
        found.add((metric["Namespace"], metric["MetricName"], dimensions))
    return found


def alarm_action_problems(alarm_properties: dict) -> list[str]:
    """Both transitions notify the optional topic, and nothing else."""
    return [
        f"{key} is {alarm_properties.get(key)!r}"
        for key in ("AlarmActions", "OKActions")
        if alarm_properties.get(key) != ALARM_ACTIONS
    ]


def alarms_on(template: dict, namespace: str, metric: str, dimension: tuple[str, dict]) -> list[dict]:
    wanted = (dimension[0], json.dumps(dimension[1], sort_keys=True))
    return [
        r["Properties"]
        for r in template["Resources"].values()
        if r["Type"] == "AWS::CloudWatch::Alarm"
        and any(ns == namespace and m == metric and wanted in dims for ns, m, dims in alarm_metrics(r["Properties"]))
    ]


def test_alarm_rules_catch_bad_snippets():
    direct = {"Namespace": "N", "MetricName": "M", "Dimensions": [{"Name": "D", "Value": {"Ref": "X"}}]}
    assert alarm_metrics(direct) == {("N", "M", (("D", '{"Ref": "X"}'),))}
    math = {"Metrics": [{"Id": "e", "Expression": "a"}, {"Id": "a", "MetricStat": {"Metric": direct}}]}
    assert alarm_metrics(math) == alarm_metrics(direct)
    assert alarm_action_problems({"AlarmActions": ALARM_ACTIONS, "OKActions": ALARM_ACTIONS}) == []
    assert alarm_action_problems({"AlarmActions": ALARM_ACTIONS}) == ["OKActions is None"]
    assert alarm_action_problems({"AlarmActions": ["arn:aws:sns:us-east-1:123456789012:t"], "OKActions": ALARM_ACTIONS})


def test_lease_table_throttling_raises_an_alarm(template):
    table = ("TableName", {"Ref": "LeaseTable"})
    reads = alarms_on(template, "AWS/DynamoDB", "ReadThrottleEvents", table)
    writes = alarms_on(template, "AWS/DynamoDB", "WriteThrottleEvents", table)
    assert reads and writes, "no alarm on the lease table's read and write throttle events"
    for alarm in reads + writes:
        # Any throttled request at all: a throttled heartbeat is a lapsed lease.
        assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanThreshold", 0)
        assert alarm["TreatMissingData"] == "notBreaching", "no data means nothing was throttled"
        assert alarm_action_problems(alarm) == []


def test_fewer_nodes_in_service_than_the_minimum_raises_an_alarm(template):
    group = ("AutoScalingGroupName", {"Ref": "NodeGroup"})
    alarms = alarms_on(template, "AWS/AutoScaling", "GroupInServiceInstances", group)
    assert len(alarms) == 1, "no alarm on the group's in-service count"
    alarm = alarms[0]
    assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("LessThanThreshold", {"Ref": "MinSize"})
    assert alarm["Statistic"] == "Minimum"
    # Longer than a rolling replacement's dip, short enough to matter.
    assert 3 <= alarm["EvaluationPeriods"] * alarm["Period"] / 60 <= 15
    assert alarm_action_problems(alarm) == []
    collected = [
        m
        for c in template["Resources"]["NodeGroup"]["Properties"].get("MetricsCollection", [])
        for m in c.get("Metrics", [])
    ]
    assert "GroupInServiceInstances" in collected, "the group does not publish the metric the alarm reads"


def test_the_alarm_topic_is_optional(template):
    parameter = template["Parameters"]["AlarmTopicArn"]
    assert parameter["Default"] == ""
    pattern = re.compile(parameter["AllowedPattern"])
    assert pattern.fullmatch("") and pattern.fullmatch("arn:aws:sns:eu-west-1:123456789012:ops-alerts")
    assert not pattern.fullmatch("ops-alerts") and not pattern.fullmatch("arn:aws:sqs:eu-west-1:123456789012:q")
    assert template["Conditions"]["HasAlarmTopic"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmTopicArn"}, ""]}]}
    assert {"LeaseTableThrottleAlarmName", "InServiceAlarmName"} <= set(template["Outputs"])
