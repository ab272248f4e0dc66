"""Deploy the output of `make package` into moto, in process, as `sls deploy` would.

The steps of `sls deploy --package`: create the stack from the create template (the
deployment bucket), upload the zip, both templates and the state file to the bucket, update
the stack with the full template. Moto's CloudFormation creates functions, roles, log groups,
rules, permissions, the queue and the topic; it skips (with a "No Moto CloudFormation
support" warning) API Gateway v2, alarms and event-invoke configs. `replay` creates those
through moto's service APIs from the same template, resolving the few intrinsic functions
they use, so that every item of the template can be asserted on live resources.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

STACK = "agent-rebalance-prod"
REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account
# Moto would apply the deployment bucket's policy (deny without TLS) ignoring its condition,
# denying every later read: it is asserted on the template instead of replayed.
NOT_REPLAYED = {"AWS::S3::BucketPolicy"}
DEPLOYMENT_STANDIN = "standin-"
SKIPPED = NOT_REPLAYED | {
    "AWS::ApiGatewayV2::Api",
    "AWS::ApiGatewayV2::Stage",
    "AWS::ApiGatewayV2::Integration",
    "AWS::ApiGatewayV2::Route",
    "AWS::ApiGatewayV2::RouteResponse",
    "AWS::ApiGatewayV2::Deployment",
    "AWS::CloudWatch::Alarm",
    "AWS::Lambda::EventInvokeConfig",
}


@dataclass
class Deployed:
    """The stack after deploy and replay: template, bucket and physical ids by logical id."""

    template: dict[str, Any]
    bucket: str
    physical: dict[str, str]
    skipped: set[str]

    def client(self, service: str) -> Any:
        return boto3.client(service, region_name=REGION)


def deploy(folder: Path) -> Deployed:
    """`sls deploy --package folder`, then the replay; records the types moto skipped."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        template, bucket, physical = _deploy_stack(folder)
    found = (_SKIP.search(str(w.message)) for w in caught)
    deployed = Deployed(template, bucket, physical, {m.group(1) for m in found if m})
    replay(deployed)
    return deployed


_SKIP = re.compile(r"Tried to parse (\S+) but it's not supported by moto's CloudFormation")


def _deploy_stack(folder: Path) -> tuple[dict[str, Any], str, dict[str, str]]:
    cfn = boto3.client("cloudformation", region_name=REGION)
    create = (folder / "cloudformation-template-create-stack.json").read_text()
    cfn.create_stack(StackName=STACK, TemplateBody=create)
    bucket = _output(cfn, "ServerlessDeploymentBucketName")
    template = json.loads((folder / "cloudformation-template-update-stack.json").read_text())
    key = template["Resources"]["DrainLambdaFunction"]["Properties"]["Code"]["S3Key"]
    prefix = key.rsplit("/", 1)[0]
    s3 = boto3.client("s3", region_name=REGION)
    for name in (
        "agent-rebalance.zip",
        "compiled-cloudformation-template.json",
        "serverless-state.json",
    ):
        source = folder / (
            "cloudformation-template-update-stack.json" if "compiled" in name else name
        )
        s3.upload_file(str(source), bucket, f"{prefix}/{name}")
    cfn.update_stack(
        StackName=STACK,
        TemplateBody=json.dumps(template),
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"],
    )
    status = cfn.describe_stacks(StackName=STACK)["Stacks"][0]["StackStatus"]
    assert status == "UPDATE_COMPLETE", status
    physical = {
        r["LogicalResourceId"]: r["PhysicalResourceId"]
        for r in cfn.list_stack_resources(StackName=STACK)["StackResourceSummaries"]
    }
    return template, bucket, physical


def _output(cfn: Any, name: str) -> str:
    outputs = cfn.describe_stacks(StackName=STACK)["Stacks"][0]["Outputs"]
    return next(o["OutputValue"] for o in outputs if o["OutputKey"] == name)


# --- replay of what moto's CloudFormation skips ---


def replay(deployed: Deployed) -> None:
    """Create the skipped resources, in dependency order, recording their physical ids."""
    resources = deployed.template["Resources"]
    for logical, resource in resources.items():
        if resource["Type"] == "AWS::Lambda::Function":
            _function_properties(deployed, deployed.physical[logical], resource["Properties"])
        if resource["Type"] == "AWS::S3::Bucket":
            _bucket_settings(deployed, logical, resource["Properties"])
    for kind in sorted(SKIPPED - NOT_REPLAYED, key=_ORDER.index):
        for logical, resource in resources.items():
            if resource["Type"] == kind:
                props = Resolver(deployed).resolve(resource.get("Properties", {}))
                deployed.physical[logical] = _CREATE[kind](deployed, logical, props)


def _function_properties(d: Deployed, name: str, p: dict[str, Any]) -> None:
    """Moto's CloudFormation drops a function's TracingConfig; its Architectures and
    LoggingConfig moto's Lambda cannot change after creation (asserted on the template)."""
    d.client("lambda").update_function_configuration(
        FunctionName=name, TracingConfig=p["TracingConfig"]
    )


def _bucket_settings(d: Deployed, logical: str, p: dict[str, Any]) -> None:
    """Moto's CloudFormation keeps a bucket's encryption only: replay versioning and the
    public-access block."""
    s3 = d.client("s3")
    bucket = d.physical[logical]
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration=p["VersioningConfiguration"])
    s3.put_public_access_block(
        Bucket=bucket, PublicAccessBlockConfiguration=p["PublicAccessBlockConfiguration"]
    )


def _api(d: Deployed, _: str, p: dict[str, Any]) -> str:
    api = d.client("apigatewayv2").create_api(Name=p["Name"], ProtocolType=p["ProtocolType"])
    return api["ApiId"]


def _stage(d: Deployed, _: str, p: dict[str, Any]) -> str:
    if str(p.get("DeploymentId", "")).startswith(DEPLOYMENT_STANDIN):
        p = {k: v for k, v in p.items() if k != "DeploymentId"}
    d.client("apigatewayv2").create_stage(**{k: v for k, v in p.items() if k != "Tags"})
    return p["StageName"]


def _integration(d: Deployed, _: str, p: dict[str, Any]) -> str:
    return d.client("apigatewayv2").create_integration(**p)["IntegrationId"]


def _route(d: Deployed, _: str, p: dict[str, Any]) -> str:
    return d.client("apigatewayv2").create_route(**p)["RouteId"]


def _route_response(d: Deployed, _: str, p: dict[str, Any]) -> str:
    return d.client("apigatewayv2").create_route_response(**p)["RouteResponseId"]


def _deployment(d: Deployed, logical: str, p: dict[str, Any]) -> str:
    # The WebSocket API's stage names a deployment (the HTTP API's stage deploys itself).
    # Moto's API Gateway v2 has no CreateDeployment: the id stands for one, and the stage is
    # created without it.
    return f"{DEPLOYMENT_STANDIN}{logical}"


def _alarm(d: Deployed, logical: str, p: dict[str, Any]) -> str:
    # Named by its logical id; CloudFormation's thresholds may be strings, the API's are not.
    d.client("cloudwatch").put_metric_alarm(
        AlarmName=logical, **{**p, "Threshold": float(p["Threshold"])}
    )
    return logical


def _invoke_config(d: Deployed, _: str, p: dict[str, Any]) -> str:
    d.client("lambda").put_function_event_invoke_config(**p)
    return p["FunctionName"]


_ORDER = [
    "AWS::ApiGatewayV2::Api",
    "AWS::ApiGatewayV2::Integration",
    "AWS::ApiGatewayV2::Route",
    "AWS::ApiGatewayV2::RouteResponse",
    "AWS::ApiGatewayV2::Deployment",
    "AWS::ApiGatewayV2::Stage",
    "AWS::CloudWatch::Alarm",
    "AWS::Lambda::EventInvokeConfig",
]
_CREATE: dict[str, Callable[[Deployed, str, dict[str, Any]], str]] = {
    "AWS::ApiGatewayV2::Api": _api,
    "AWS::ApiGatewayV2::Stage": _stage,
    "AWS::ApiGatewayV2::Integration": _integration,
    "AWS::ApiGatewayV2::Route": _route,
    "AWS::ApiGatewayV2::RouteResponse": _route_response,
    "AWS::ApiGatewayV2::Deployment": _deployment,
    "AWS::CloudWatch::Alarm": _alarm,
    "AWS::Lambda::EventInvokeConfig": _invoke_config,
}


class Resolver:
    """Ref, Fn::GetAtt, Fn::Join and Fn::Sub against the deployed stack (the ones used)."""

    def __init__(self, deployed: Deployed) -> None:
        self.d = deployed
        self.pseudo = {
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
        }

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if not isinstance(value, dict):
            return value
        if set(value) == {"Ref"}:
            return self.ref(value["Ref"])
        if set(value) == {"Fn::GetAtt"}:
            return self.get_att(*value["Fn::GetAtt"])
        if set(value) == {"Fn::Join"}:
            sep, parts = value["Fn::Join"]
            return sep.join(str(p) for p in self.resolve(parts))
        return {k: self.resolve(v) for k, v in value.items()}

    def ref(self, name: str) -> str:
        if name in self.pseudo:
            return self.pseudo[name]
        return self.d.physical[name]  # a function's name, a queue's URL, a topic's ARN

    def get_att(self, name: str, attribute: str) -> str:
        kind = self.d.template["Resources"][name]["Type"]
        physical = self.d.physical[name]
        if kind == "AWS::Lambda::Function" and attribute == "Arn":
            return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{physical}"
        if kind == "AWS::Logs::LogGroup" and attribute == "Arn":
            return f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{physical}:*"
        if kind == "AWS::SQS::Queue":
            queue = physical.rsplit("/", 1)[-1]
            return queue if attribute == "QueueName" else f"arn:aws:sqs:{REGION}:{ACCOUNT}:{queue}"
        raise AssertionError(f"the replay does not resolve {name}.{attribute}")
