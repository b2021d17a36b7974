"""CallbackFunction: provider webhooks on POST /callbacks/{task_id}."""

from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.utilities.typing import LambdaContext

from i2v.entrypoints import callback_response
from i2v.errors import BadCallback, Unauthorized
from i2v.observability import logger, metrics, tracer

app = APIGatewayHttpResolver()


@app.post("/callbacks/<task_id>")
@tracer.capture_method
def callback(task_id: str) -> Response[Any]:
    answer = callback_response(app.current_event, task_id, owner=app.lambda_context.aws_request_id)
    return Response(answer["status_code"], content_types.APPLICATION_JSON, answer["body"])


@app.exception_handler(Unauthorized)  # type: ignore[untyped-decorator]
def unauthorized(exc: Unauthorized) -> Response[Any]:
    logger.warning("callback refused", extra={"reason": exc.message})
    return Response(401, content_types.APPLICATION_JSON, {"message": "Unauthorized"})


@app.exception_handler(BadCallback)  # type: ignore[untyped-decorator]
def bad_callback(exc: BadCallback) -> Response[Any]:
    logger.warning("callback not understood", extra={"reason": exc.message})
    return Response(400, content_types.APPLICATION_JSON, {"message": exc.message})


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
