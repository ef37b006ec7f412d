"""An agent for testing `idem mcp-proxy`, written with the official MCP Python SDK.

    python tests/mcp/proxy_client.py [--list-tools] [--browse] [--concurrent] [--timeout SECONDS]
        [--cancel-after SECONDS] [--decline-first] --calls JSON
        (-- COMMAND [ARGS...] | --url URL)

connects to an MCP server, either by starting `COMMAND ARGS...` as a stdio server (this
process's environment is passed on, so a proxy under test sees its settings) or over
streamable HTTP at URL, and makes the calls given in `--calls`, a JSON array of
`{"tool": NAME, "arguments": {...}}`: one after the other, each a new JSON-RPC request (a new
id, as an agent's retry is), or all at once with `--concurrent`. Each call has its own
timeout (`--timeout`, 60 s by default).

With `--cancel-after SECONDS`, a call not answered in that time is given up the way the SDK
gives up on its own per-call read timeout (`read_timeout_seconds`): it sends the server
`notifications/cancelled` for the request's id and fails the call. (mcp 2 sends that
cancellation on a `--timeout` too, as for any call cancelled on this side.)

Every call asks for progress (it carries a progress token), and the progress notifications
that arrive for it are kept in its record, in order of arrival.

Every question the server asks the user (an elicitation) is answered yes,
`{"approve": true}`, except that with `--decline-first` the first one is declined.

It prints one JSON object on stdout, and nothing else there:

    {"sdk": "mcp X.Y.Z",
     "tools": [{"name", "readOnlyHint", "idempotentHint"}, ...],   # with --list-tools
     "resources": [uri, ...], "resource_text": [...],              # with --browse: the
     "prompts": [name, ...], "prompt_text": [...],                 # ledger resource read,
                                                                   # the apology prompt got
     "calls": [...],                                              # in the order given
     "questions": ["<message>", ...]}

where each call is one of
    {"tool", "arguments", "answer": structuredContent or null, "is_error", "text": [...]}
    {"tool", "arguments", "error": {"code", "message", "data"}}   # a JSON-RPC error answer
    {"tool", "arguments", "failure": "<ExceptionType>: <message>"}  # no answer at all
and each also has `"progress": [[progress, total or null, message or null], ...]`, empty if
none arrived (the SDK hands progress and total over as floats: `[1.0, 3.0, "step 1"]`).

A failure is a call that got no answer: the server died or closed the connection, or the
call timed out or was cancelled. The SDK reports a closed connection as an MCP error
(-32000 "Connection closed") and its read timeout as one too (-32001 "Request 'tools/call'
timed out"), both made up on this side; they are recorded as failures, not errors, as
`MCPError: -32000 Connection closed` and `MCPError: -32001 Request 'tools/call' timed out`.
Whatever happens to the server, the report is printed and the exit status is 0; judging it
is the caller's.
"""

import argparse
import importlib.metadata
import json
import os
import sys
from contextlib import asynccontextmanager

import anyio
from mcp import ClientSession, StdioServerParameters, types
from mcp.client.stdio import stdio_client

try:
    from mcp.shared.exceptions import MCPError
except ImportError:  # mcp 1.x
    from mcp.shared.exceptions import McpError as MCPError

# The codes and messages of the errors the SDK makes up, with no answer from the server, when
# the transport closes under a request or the request's read timeout runs out.
CONNECTION_CLOSED = -32000, "Connection closed"
REQUEST_TIMEOUT = -32001, "Request 'tools/call' timed out"


def log(*words):
    print("proxy_client:", *words, file=sys.stderr, flush=True)


def wire(model):
    """A result as it travels on the wire (camelCase field names)."""
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def describe(error):
    """An exception as `Type: message`; an exception group as its first leaf, which is
    what the server's death or a timeout looks like once anyio has wrapped it."""
    while getattr(error, "exceptions", None):  # an exception group, on 3.10 too
        error = error.exceptions[0]
    if isinstance(error, MCPError):
        return f"{type(error).__name__}: {error.code} {error.message}"
    return f"{type(error).__name__}: {error or 'no answer in time'}"


@asynccontextmanager
async def connect(args):
    """The read and write streams to the server, over stdio or streamable HTTP."""
    if args.url:
        try:
            from mcp.client.streamable_http import streamable_http_client as http_client
        except ImportError:  # mcp 1.x, which also yields a session id getter
            from mcp.client.streamable_http import streamablehttp_client as http_client
        async with http_client(args.url) as streams:
            yield streams[0], streams[1]
    else:
        server = StdioServerParameters(
            command=args.command[0], args=args.command[1:], env=dict(os.environ)
        )
        async with stdio_client(server) as (read, write):
            yield read, write


class User:
    """The person behind the agent: says yes to every question, or no to the first one
    with --decline-first, and remembers every question."""

    def __init__(self, decline_first):
        self.decline_first = decline_first
        self.questions = []

    async def answer(self, context, params):
        self.questions.append(params.message)
        if self.decline_first and len(self.questions) == 1:
            return types.ElicitResult(action="decline")
        return types.ElicitResult(action="accept", content={"approve": True})


async def call(session, args, spec, calls, index):
    """Make one call and store what came of it at its index, whatever that was."""
    seen = {"tool": spec["tool"], "arguments": spec.get("arguments", {})}
    progress = []

    async def on_progress(done, total, message):
        progress.append([done, total, message])

    timeout = args.timeout
    try:
        with anyio.fail_after(timeout):
            # Passing a callback is what makes the SDK put a progress token in the request.
            # The read timeout is the SDK's own, not a cancel scope of ours, so that giving up
            # is the SDK's: it sends notifications/cancelled before raising.
            result = await session.call_tool(
                seen["tool"],
                seen["arguments"],
                read_timeout_seconds=args.cancel_after,
                progress_callback=on_progress,
            )
        result = wire(result)
    except MCPError as error:
        if (error.code, error.message) in (CONNECTION_CLOSED, REQUEST_TIMEOUT):
            seen["failure"] = describe(error)
        else:
            seen["error"] = {"code": error.code, "message": error.message, "data": error.data}
    except TimeoutError:
        seen["failure"] = f"TimeoutError: no answer in {timeout} s"
    except Exception as error:  # the connection broke
        seen["failure"] = describe(error)
    else:
        seen["answer"] = result.get("structuredContent")
        seen["is_error"] = bool(result.get("isError", False))
        seen["text"] = [c["text"] for c in result.get("content", []) if c.get("type") == "text"]
    seen["progress"] = progress
    calls[index] = seen
    log(json.dumps(seen))


async def browse(session, report):
    """What is not a tool: the resources and prompts, and one of each read."""
    resources = await session.list_resources()
    report["resources"] = sorted(str(resource.uri) for resource in resources.resources)
    read = await session.read_resource("ledger://executions")
    report["resource_text"] = [getattr(c, "text", None) for c in read.contents]
    prompts = await session.list_prompts()
    report["prompts"] = sorted(prompt.name for prompt in prompts.prompts)
    prompt = await session.get_prompt("apology", {"customer": "Ada"})
    report["prompt_text"] = [getattr(m.content, "text", None) for m in prompt.messages]


async def run(args, specs, report, user):
    calls = report["calls"]
    async with connect(args) as (read, write):
        async with ClientSession(read, write, elicitation_callback=user.answer) as session:
            with anyio.fail_after(args.timeout):
                initialized = await session.initialize()
            log("protocol", initialized.protocol_version)
            if args.list_tools:
                with anyio.fail_after(args.timeout):
                    listed = await session.list_tools()
                for tool in listed.tools:
                    hints = wire(tool.annotations) if tool.annotations else {}
                    report["tools"].append(
                        {
                            "name": tool.name,
                            "readOnlyHint": hints.get("readOnlyHint"),
                            "idempotentHint": hints.get("idempotentHint"),
                        }
                    )
                report["tools"].sort(key=lambda tool: tool["name"])
            if args.browse:
                with anyio.fail_after(args.timeout):
                    await browse(session, report)
            if args.concurrent:
                async with anyio.create_task_group() as agents:
                    for index, spec in enumerate(specs):
                        agents.start_soon(call, session, args, spec, calls, index)
            else:
                for index, spec in enumerate(specs):
                    await call(session, args, spec, calls, index)


def parse(argv):
    """Options before `--`, the server command after it."""
    command = []
    if "--" in argv:
        split = argv.index("--")
        argv, command = argv[:split], argv[split + 1 :]
    parser = argparse.ArgumentParser(usage=__doc__.split("\n\n")[1].strip())
    parser.add_argument("--list-tools", action="store_true")
    parser.add_argument("--concurrent", action="store_true")
    parser.add_argument("--browse", action="store_true")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--cancel-after", type=float)
    parser.add_argument("--decline-first", action="store_true")
    parser.add_argument("--calls", required=True, type=json.loads)
    parser.add_argument("--url")
    args = parser.parse_args(argv)
    args.command = command
    if bool(args.url) == bool(command):
        parser.error("give either -- COMMAND [ARGS...] or --url URL")
    return args


async def main(argv):
    args = parse(argv)
    specs = args.calls
    user = User(args.decline_first)
    report = {
        "sdk": f"mcp {importlib.metadata.version('mcp')}",
        "tools": [],
        "calls": [None] * len(specs),
        "questions": user.questions,
    }
    stopped = None
    try:
        await run(args, specs, report, user)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as error:
        # The server's death can also surface here, at the exit of the transport or the
        # session, often wrapped in an exception group: the report is printed all the same.
        stopped = describe(error)
        log("connection ended:", stopped)
    finally:
        for index, spec in enumerate(specs):
            if report["calls"][index] is None:
                report["calls"][index] = {
                    "tool": spec["tool"],
                    "arguments": spec.get("arguments", {}),
                    "failure": f"no answer: {stopped or 'the call was never made'}",
                    "progress": [],
                }
        print(json.dumps(report, indent=2), flush=True)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1:])
