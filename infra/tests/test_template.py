"""Checks on infra/cloudformation/vipfleet.yaml that cfn-lint does not make.

Each rule is a small function over plain data, tested on the real template and
on a deliberately bad snippet, so that a rule that stopped checking would fail.
"""

from __future__ import annotations

import json
import re

import pytest
from conftest import SAMPLE_PARAMETERS, TEMPLATE_PATH, load_template, render_user_data

import sync_userdata

READ_ONLY_PREFIXES = ("Describe", "Get", "List")
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


def termination_hooks(asg_properties: dict) -> list[dict]:
    return [
        h
        for h in asg_properties.get("LifecycleHookSpecificationList", [])
        if h.get("LifecycleTransition") == "autoscaling:EC2_INSTANCE_TERMINATING"
    ]


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


def test_source_dest_check_needs_this_stacks_tag(template):
    modify = statement(template, "SourceDestCheck")
    assert modify["Action"] == "ec2:ModifyNetworkInterfaceAttribute"
    assert modify["Condition"] == {"StringEquals": {"aws:ResourceTag/vipfleet:stack": {"Ref": "AWS::StackName"}}}
    specs = template["Resources"]["NodeLaunchTemplate"]["Properties"]["LaunchTemplateData"]["TagSpecifications"]
    tagged = {
        s["ResourceType"]
        for s in specs
        if {"Key": "vipfleet:stack", "Value": {"Ref": "AWS::StackName"}} in s["Tags"]
    }
    assert {"network-interface", "instance"} <= tagged


def test_lease_table_actions_only_on_the_table(template):
    lease = statement(template, "LeaseTable")
    assert lease["Resource"] == {"Fn::GetAtt": ["LeaseTable", "Arn"]}
    assert all(a.startswith("dynamodb:") for a in lease["Action"])
    assert {"dynamodb:UpdateItem", "dynamodb:ConditionCheckItem", "dynamodb:Scan"} <= set(lease["Action"])


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


def test_termination_lifecycle_hook(template):
    props = template["Resources"]["NodeGroup"]["Properties"]
    hooks = termination_hooks(props)
    assert len(hooks) == 1
    hook = hooks[0]
    assert hook["DefaultResult"] == "CONTINUE"
    assert hook["HeartbeatTimeout"] == {"Ref": "LifecycleHeartbeatTimeout"}
    user_data = render_user_data(template, SAMPLE_PARAMETERS)
    assert f"export VIPFLEET_LIFECYCLE_HOOK_NAME='{hook['LifecycleHookName']}'" in user_data
    asg_name = props["AutoScalingGroupName"]["Fn::Sub"].replace("${AWS::StackName}", "vipfleet")
    assert f"export VIPFLEET_LIFECYCLE_ASG_NAME='{asg_name}'" in user_data


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
