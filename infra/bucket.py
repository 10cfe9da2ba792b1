"""Provision the output bucket, idempotently: create it, expire old images, let browsers read them.

    python -m infra.bucket --bucket NAME [--endpoint-url URL] [--region REGION] [--prefix sdgate/]
        [--expire-days 30] [--cors-origin ORIGIN ...] [--public-prefix | --private]

Running it again with the same options changes nothing. The lifecycle rule, CORS rule and policy
statement it manages carry ids starting with "sdgate-"; anything else on the bucket is kept.
Credentials come from the usual AWS variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY).
"""

from __future__ import annotations

import argparse
import json
import sys

LIFECYCLE_ID = "sdgate-expire-outputs"
CORS_ID = "sdgate-browser-read"
POLICY_SID = "sdgate-public-read"
# Fully blocked, except that a bucket policy may grant public reads (our one statement).
PUBLIC_POLICY_BLOCK = {"BlockPublicAcls": True, "IgnorePublicAcls": True,
                       "BlockPublicPolicy": False, "RestrictPublicBuckets": False}


def _code(err) -> str:
    return err.response.get("Error", {}).get("Code", "")


def _read(call, missing: str, default):
    """A get_* call's answer, or `default` when the server says the configuration is absent."""
    from botocore.exceptions import ClientError

    try:
        return call()
    except ClientError as e:
        if _code(e) == missing:
            return default
        raise


def _merge(items: list[dict], key: str, ident: str, ours: dict | None) -> list[dict]:
    """`items` with the one identified by items[key] == ident replaced by `ours` (or removed)."""
    kept = [i for i in items if i.get(key) != ident]
    return kept + [ours] if ours else kept


def ensure_bucket(s3, bucket: str, region: str | None) -> str:
    from botocore.exceptions import ClientError

    try:
        s3.head_bucket(Bucket=bucket)
        return "bucket exists"
    except ClientError as e:
        if _code(e) not in ("404", "NoSuchBucket", "NotFound"):
            raise SystemExit(f"bucket {bucket!r} is not reachable with these credentials: {e}")
    kwargs = {"Bucket": bucket}
    if region and region != "us-east-1":  # us-east-1 refuses its own name as a constraint
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    s3.create_bucket(**kwargs)
    return "bucket created"


def ensure_lifecycle(s3, bucket: str, prefix: str, days: int) -> str:
    rules = _read(lambda: s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"],
                  "NoSuchLifecycleConfiguration", [])
    ours = {"ID": LIFECYCLE_ID, "Filter": {"Prefix": prefix}, "Status": "Enabled",
            "Expiration": {"Days": days}} if days else None
    new = _merge(rules, "ID", LIFECYCLE_ID, ours)
    if new == rules:
        return "lifecycle unchanged"
    if new:
        s3.put_bucket_lifecycle_configuration(Bucket=bucket,
                                              LifecycleConfiguration={"Rules": new})
    else:
        s3.delete_bucket_lifecycle(Bucket=bucket)
    return f"lifecycle: images under {prefix!r} expire after {days} days" if days else \
        "lifecycle: expiry rule removed"


def ensure_cors(s3, bucket: str, origins: list[str]) -> str:
    rules = _read(lambda: s3.get_bucket_cors(Bucket=bucket)["CORSRules"],
                  "NoSuchCORSConfiguration", [])
    ours = {"ID": CORS_ID, "AllowedHeaders": ["*"], "AllowedMethods": ["GET", "HEAD"],
            "AllowedOrigins": origins, "ExposeHeaders": ["Content-Length", "Content-Type", "ETag"],
            "MaxAgeSeconds": 3600} if origins else None
    new = _merge(rules, "ID", CORS_ID, ours)
    if new == rules:
        return "cors unchanged"
    if new:
        s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": new})
    else:
        s3.delete_bucket_cors(Bucket=bucket)
    return f"cors: GET from {', '.join(origins)}" if origins else "cors rule removed"


def ensure_access(s3, bucket: str, prefix: str, public: bool) -> str:
    """Public: anyone may GET objects under the prefix. Private: only presigned URLs work."""
    policy = _read(lambda: json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"]),
                   "NoSuchBucketPolicy", {"Version": "2012-10-17", "Statement": []})
    ours = {"Sid": POLICY_SID, "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
            "Resource": f"arn:aws:s3:::{bucket}/{prefix}*"} if public else None
    statements = _merge(policy.get("Statement", []), "Sid", POLICY_SID, ours)
    said = []
    if public:
        block = _read(lambda: s3.get_public_access_block(Bucket=bucket)[
            "PublicAccessBlockConfiguration"], "NoSuchPublicAccessBlockConfiguration", None)
        if block != PUBLIC_POLICY_BLOCK:
            s3.put_public_access_block(Bucket=bucket,
                                       PublicAccessBlockConfiguration=PUBLIC_POLICY_BLOCK)
            said.append("public access block allows our policy")
    if statements != policy.get("Statement", []):
        if statements:
            s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps({**policy,
                                                                   "Statement": statements}))
        else:
            s3.delete_bucket_policy(Bucket=bucket)
        said.append(f"policy: public GET under {prefix!r}" if public else
                    "policy: public read removed (presigned URLs only)")
    return "; ".join(said) or "access unchanged"


def describe(s3, bucket: str) -> dict:
    """The bucket configuration this module manages, as the server reports it."""
    return {
        "lifecycle": _read(lambda: s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"],
                           "NoSuchLifecycleConfiguration", []),
        "cors": _read(lambda: s3.get_bucket_cors(Bucket=bucket)["CORSRules"],
                      "NoSuchCORSConfiguration", []),
        "policy": _read(lambda: json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"]),
                        "NoSuchBucketPolicy", None),
        "public_access_block": _read(lambda: s3.get_public_access_block(Bucket=bucket)[
            "PublicAccessBlockConfiguration"], "NoSuchPublicAccessBlockConfiguration", None),
    }


def public_url(bucket: str, endpoint_url: str | None, region: str | None) -> str:
    """The base URL of public objects (SDGATE_S3_PUBLIC_URL), path-style off AWS."""
    if endpoint_url:
        return f"{endpoint_url.rstrip('/')}/{bucket}"
    return f"https://{bucket}.s3.{region or 'us-east-1'}.amazonaws.com"


def client(endpoint_url: str | None, region: str | None):
    import boto3
    from botocore.config import Config

    # Checksums only where S3 requires them: R2, MinIO and others reject some optional ones.
    config = Config(request_checksum_calculation="when_required", signature_version="s3v4")
    return boto3.client("s3", endpoint_url=endpoint_url, region_name=region, config=config)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m infra.bucket", description=__doc__.split(
        "\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--endpoint-url", help="S3 protocol endpoint (R2, MinIO); AWS if unset")
    parser.add_argument("--region", help="AWS region (default: the client's)")
    parser.add_argument("--prefix", default="sdgate/", help="key prefix of generated images "
                        "(SDGATE_S3_PREFIX, default sdgate/)")
    parser.add_argument("--expire-days", type=int, default=30,
                        help="delete generated images after this many days; 0 keeps them")
    parser.add_argument("--cors-origin", action="append", dest="origins", metavar="ORIGIN",
                        help="origin allowed to GET images from a browser (repeatable; default *)")
    access = parser.add_mutually_exclusive_group()
    access.add_argument("--public-prefix", dest="public", action="store_true",
                        help="anyone may GET images under the prefix (stable URLs)")
    access.add_argument("--private", dest="public", action="store_false",
                        help="no public reads: sdgate hands out presigned URLs (the default)")
    args = parser.parse_args(argv)
    if args.expire_days < 0:
        parser.error("--expire-days must be 0 or more")
    origins = ["*"] if args.origins is None else [o for o in args.origins if o]

    s3 = client(args.endpoint_url, args.region)
    for step in (ensure_bucket(s3, args.bucket, args.region),
                 ensure_lifecycle(s3, args.bucket, args.prefix, args.expire_days),
                 ensure_cors(s3, args.bucket, origins),
                 ensure_access(s3, args.bucket, args.prefix, args.public)):
        print(step)
    settings = {"SDGATE_S3_BUCKET": args.bucket, "SDGATE_S3_PREFIX": args.prefix}
    if args.endpoint_url:
        settings["SDGATE_S3_ENDPOINT_URL"] = args.endpoint_url
    if args.region:
        settings["SDGATE_S3_REGION"] = args.region
    if args.public:
        settings["SDGATE_S3_PUBLIC_URL"] = public_url(args.bucket, args.endpoint_url, args.region)
    print("\nsettings for the sdgate-s3 secret:\n" +
          " ".join(f"{k}={v}" for k, v in settings.items()))
    return settings


if __name__ == "__main__":
    main(sys.argv[1:])
