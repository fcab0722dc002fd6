"""moto in server mode, with one request at a time.

`moto_server` serves requests on many threads, and its DynamoDB backend
checks a ConditionExpression and applies the update without a lock: two
racing conditional writes can both succeed (seen with moto 5.2.5: two
`attribute_not_exists(owner)` claims of one shard, both answered 200). Real
DynamoDB never does that, and vipfleet's leases rest on it. This launcher
runs the same application behind a lock, so each request is atomic, as it
is in AWS. The contract test `racing_claims_have_one_winner` fails against
a plain `moto_server`.

It also answers DynamoDB's item calls without moto's generic response
serializer: that one walks every attribute of every item through its alias
machinery, and a Scan of a 3-node lab's 16 items cost ~40 ms of CPU, so a
hot fleet's reads alone kept moto half busy and every lease call queued.

Usage (the same flags as moto_server):
    python moto_server.py -H 127.0.0.1 -p 5055
"""

import argparse
import json
import os
import threading

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple


def serialized(app):
    lock = threading.Lock()

    def handle(environ, start_response):
        with lock:
            # Materialize the body inside the lock: moto may build it lazily.
            return list(app(environ, start_response))

    return handle


# Item operations whose results moto hands over as plain dicts in DynamoDB's
# wire format (`DynamoResult`); everything else keeps moto's serializer.
FAST_DYNAMODB_OPERATIONS = frozenset(
    ["GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query", "Scan", "BatchGetItem", "TransactGetItems"]
)
DYNAMODB_CONTENT_TYPE = "application/x-amz-json-1.0"


def fast_dynamodb_results():
    from moto.dynamodb.models.utilities import DynamoJsonEncoder
    from moto.dynamodb.responses import DynamoResult

    generic = DynamoResult.execute_result

    def execute_result(self, context):
        if context.operation_model.name not in FAST_DYNAMODB_OPERATIONS or not isinstance(self.result, dict):
            return generic(self, context)
        # The encoder is moto's own: bytes as base64, datetimes as epoch seconds.
        body = json.dumps(self.result, cls=DynamoJsonEncoder)
        return 200, {"Content-Type": DYNAMODB_CONTENT_TYPE}, body

    DynamoResult.execute_result = execute_result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5000)
    args = parser.parse_args()
    # moto_server does this too: some services put the port in URLs they return.
    os.environ.setdefault("MOTO_PORT", str(args.port))
    fast_dynamodb_results()
    app = DomainDispatcherApplication(create_backend_app)
    # Connections are still accepted on many threads; only the application
    # (where moto's state changes) runs one request at a time.
    run_simple(args.host, args.port, serialized(app), threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
