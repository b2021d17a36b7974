"""What every route's simulator shares; a route's module adds only its wire format.

The core owns the task store and its lifecycle (the neutral `State`s a wire module maps to
its status names, with the time each was reached), the control API (`/_sim/faults`,
`/_sim/state`, `/_sim/reset`, `/_sim/forget/{task_id}`), fault injection on create calls,
status reads and tasks, a one-second rate window on status reads, one worker per task
(image fetch through the presigned URL or from a `data:` URL, the route's image check,
rendering with local/render.py), video serving at `/videos/{task_id}.mp4`, webhook
delivery (drop, duplicate, delay, retry; one record per attempt), the HTTP server (each
request handed to the route with its query parsed) and the command line. A route
subclasses `Simulator` and fills in the hooks of `WireFormat`: the API routes, request
parsing, task and webhook bodies, error bodies and webhook signing.

One module each: `simulator` (the `Simulator` class: store, lifecycle, workers, videos),
`wire` (what a route fills in), `tasks` (states, tasks, how they end), `faults` (injected
faults, the rate window), `control` (the /_sim/ routes), `images` (fetch, `data:` URLs,
shared image checks), `webhooks` (delivery), `http` (requests, replies, the API key, the
server) and `cli` (the command line). See docs/simulator.md ("The core").
"""

from local.simulators.core.cli import cli_parser, common_options, env_option, serve_until_stopped
from local.simulators.core.faults import Faults, RateWindow
from local.simulators.core.http import (
    REQUEST_BODY_MAX_BYTES,
    ApiKey,
    HttpRequest,
    Reply,
    is_int,
    json_reply,
    retry_after_header,
)
from local.simulators.core.images import (
    check_decodes,
    check_size,
    data_url_body_max,
    data_url_bytes,
    is_data_url,
    is_http_url,
    is_image_url,
)
from local.simulators.core.simulator import Simulator, SimulatorOptions
from local.simulators.core.tasks import (
    TERMINAL_STATES,
    FailureCause,
    ImageToVideoRequest,
    SimTask,
    State,
    TaskFailed,
    TaskRequest,
    failure_cause,
)

__all__ = [
    "REQUEST_BODY_MAX_BYTES",
    "TERMINAL_STATES",
    "ApiKey",
    "FailureCause",
    "Faults",
    "HttpRequest",
    "ImageToVideoRequest",
    "RateWindow",
    "Reply",
    "SimTask",
    "Simulator",
    "SimulatorOptions",
    "State",
    "TaskFailed",
    "TaskRequest",
    "check_decodes",
    "check_size",
    "cli_parser",
    "common_options",
    "data_url_body_max",
    "data_url_bytes",
    "env_option",
    "failure_cause",
    "is_data_url",
    "is_http_url",
    "is_image_url",
    "is_int",
    "json_reply",
    "retry_after_header",
    "serve_until_stopped",
]
