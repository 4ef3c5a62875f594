"""Follow a task's events over WebSocket: subscribe to its queue, submit it over REST, print
each state until it ends. With `tq dev` running (REST and WebSocket on port 8080),
`python examples/ws_watch.py` prints pending, in_progress, then "completed: hello".
Needs only the `websockets` package; set TQ_REST_URL for another broker."""

import asyncio
import json
import os
import urllib.request

from websockets.asyncio.client import connect

BASE = os.environ.get("TQ_REST_URL", "http://127.0.0.1:8080")
if not BASE.startswith(("http://", "https://")):
    raise SystemExit(f"TQ_REST_URL must be an http:// or https:// URL, not {BASE!r}")
ENDED = {"completed", "dead_letter", "cancelled"}


def submit(task: dict[str, object]) -> str:
    request = urllib.request.Request(  # noqa: S310 (BASE is http or https, checked above)
        f"{BASE}/v1/tasks",
        data=json.dumps(task).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return str(json.load(response)["id"])


async def watch() -> None:
    async with connect(BASE.replace("http", "ws", 1) + "/ws") as ws:
        # Subscribe first, then submit: no event of the task can come before the subscription.
        await ws.send(json.dumps({"op": "subscribe", "queues": ["default"]}))
        ack = json.loads(await ws.recv())
        if ack["type"] == "error":
            raise SystemExit(f"refused: {ack['error']['message']}")
        task_id = await asyncio.to_thread(submit, {"task_type": "echo", "payload": "hello"})
        async for raw in ws:
            message = json.loads(raw)
            if message["type"] != "task" or message["task_id"] != task_id:
                continue  # other tasks of the queue
            if message["state"] in ENDED:
                print(f"{message['state']}: {message.get('result') or message.get('error')}")
                return
            print(message["state"])


asyncio.run(asyncio.wait_for(watch(), timeout=30))
