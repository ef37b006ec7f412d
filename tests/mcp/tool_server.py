"""An MCP server whose tools have effects a test can count, for `idem mcp-proxy`.

    python tests/mcp/tool_server.py --ledger PATH [--name NAME] [--http PORT]

Written with the official MCP Python SDK's high-level server class (`MCPServer`, FastMCP
before mcp 2). It serves over stdio, or with `--http PORT` over streamable HTTP at
`http://127.0.0.1:PORT/mcp`; once that socket is bound and accepting, it prints the line
`tool_server: listening on http://127.0.0.1:PORT/mcp` on stderr (after uvicorn's own log
lines), which a test waits for before connecting.

Every real execution of a tool appends one line to the ledger file, so a test counts how
often a tool really ran, whatever the proxy in front of it answered. A line is a kind word,
its fields separated by single spaces, then `pid=<pid> ppid=<ppid>`: the parent is the
process that started this server (the proxy over stdio; over HTTP, whoever started it),
which a test can SIGKILL.

- send_email(to, subject, body) -> {"message_id": "msg-<n>", "to"}; line `email TO SUBJECT`.
  After the line is written (the email is sent), a subject starting `hold:` waits for the
  file `<ledger>.release` before answering, and one starting `crash:` kills this server
  without an answer. A `hold:` call the client cancels while it waits (it sent
  `notifications/cancelled` for the call's id, and the SDK cancelled the tool) writes line
  `cancelled TO SUBJECT` and answers nothing. One the SDK cancels because the connection
  closed (the proxy died or shut down) writes nothing more, as before.
- lookup_order(order_id): read-only and idempotent (annotated so); line `lookup ORDER`.
- charge_card(order_id, amount_cents): over 100000 cents the card is declined: line
  `decline ORDER AMOUNT` and a tool error result (isError); else line `charge ORDER AMOUNT`.
- create_ticket(title): takes 0.3 s before filing, so two concurrent calls overlap.
- a resource, `ledger://executions` (the ledger's text), and a prompt, `apology(customer)`:
  not tools, for a proxy to pass through.
- refund_charge(charge_id): asks the user first (an elicitation); only on approval does it
  refund (line `refund CHARGE`), otherwise it answers a tool error and writes nothing.
- export_report(name, steps) -> {"report": name, "steps": steps}: sends one progress
  notification per step (progress i, total steps, message `step i`; only if the call asked
  for progress with a token), 0.05 s apart, then writes line `report NAME STEPS`.

Subjects and titles have their spaces replaced by `_` in the ledger, to keep fields split by
spaces. Counts (`<n>`, lookups, attempts) are read back from the ledger after the append,
so they count executions across server processes too.
"""

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TypedDict

import anyio
import uvicorn  # a dependency of mcp, which serves streamable HTTP with it
from mcp.server.mcpserver import Context, MCPServer
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel

LEDGER = Path("ledger.log")  # set from --ledger in main()


def record(kind, *fields):
    """Append one execution to the ledger, durably, and return the ledger's lines after it."""
    line = " ".join([kind, *map(str, fields), f"pid={os.getpid()} ppid={os.getppid()}"])
    with open(LEDGER, "a", encoding="utf-8") as ledger:
        ledger.write(line + "\n")
        ledger.flush()
        os.fsync(ledger.fileno())
    return [entry.split(" ") for entry in LEDGER.read_text(encoding="utf-8").splitlines()]


def count(lines, kind, first_field=None):
    """How many ledger lines are of this kind (and, if given, about this first field)."""
    return sum(
        1
        for fields in lines
        if fields[0] == kind and (first_field is None or fields[1] == first_field)
    )


def answer(structured):
    """A successful tool result carrying structured content, with its JSON as text too."""
    return CallToolResult(
        content=[TextContent(type="text", text=json.dumps(structured))],
        structured_content=structured,
    )


def tool_error(text):
    """A tool error result (isError: true), not a JSON-RPC error: the tool ran and failed.
    (Raising ToolError would prefix the text with "Error executing tool ...".)"""
    return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)


class Email(TypedDict):
    message_id: str
    to: str


class Order(TypedDict):
    order_id: str
    status: str
    lookups: int


class Ticket(TypedDict):
    ticket_id: str
    title: str


class Report(TypedDict):
    report: str
    steps: int


class Approval(BaseModel):
    """What refund_charge asks the user."""

    approve: bool


def peer_cancelled(ctx):
    """Whether the client sent notifications/cancelled for the request this context serves.

    The SDK cancels a tool for that, and also when the connection closes under it; only the
    first is the client's doing. MCPServer's Context (mcp 2.3.0) does not expose the flag the
    SDK sets before cancelling (the lowlevel Context has it as `cancel_requested`), so it is
    read from the per-request dispatch context that the request's session holds.
    """
    return ctx.request_context.session._request_outbound.cancel_requested.is_set()


async def send_email(to: str, subject: str, body: str, ctx: Context) -> Email:
    """Send an email."""
    lines = record("email", to, subject.replace(" ", "_"))
    # The email is out (the line is written); now misbehave if the test asked for it.
    if subject.startswith("crash:"):
        os._exit(3)  # dies at once: no answer, no clean shutdown
    if subject.startswith("hold:"):
        release = Path(f"{LEDGER}.release")
        try:
            while not release.exists():
                await anyio.sleep(0.05)
        except anyio.get_cancelled_exc_class():
            # A test reads from the ledger that the client's cancellation reached the
            # server (through a proxy, say). The write has no await, so the cancelled scope
            # cannot interrupt it.
            if peer_cancelled(ctx):
                record("cancelled", to, subject.replace(" ", "_"))
            raise
    return {"message_id": f"msg-{count(lines, 'email')}", "to": to}


async def lookup_order(order_id: str) -> Order:
    """Look up an order's status."""
    lines = record("lookup", order_id)
    return {"order_id": order_id, "status": "shipped", "lookups": count(lines, "lookup", order_id)}


async def charge_card(order_id: str, amount_cents: int) -> CallToolResult:
    """Charge the customer's card for an order."""
    if amount_cents > 100000:
        lines = record("decline", order_id, amount_cents)
        attempt = count(lines, "decline", order_id)
        return tool_error(f"card declined for {order_id} (attempt {attempt})")
    lines = record("charge", order_id, amount_cents)
    charge_id = f"ch_{count(lines, 'charge')}"
    return answer({"charge_id": charge_id, "order_id": order_id, "amount_cents": amount_cents})


async def create_ticket(title: str) -> Ticket:
    """File a support ticket."""
    await anyio.sleep(0.3)  # slow enough that two concurrent identical calls overlap
    lines = record("ticket", title.replace(" ", "_"))
    return {"ticket_id": f"T-{count(lines, 'ticket')}", "title": title}


async def refund_charge(charge_id: str, ctx: Context) -> CallToolResult:
    """Refund a charge, once the user approves."""
    asked = await ctx.elicit(f"Refund {charge_id}?", schema=Approval)
    if asked.action != "accept" or not asked.data.approve:
        return tool_error("refund not approved")
    lines = record("refund", charge_id)
    return answer({"refund_id": f"re_{count(lines, 'refund')}", "charge_id": charge_id})


async def export_report(name: str, steps: int, ctx: Context) -> Report:
    """Export a report, reporting progress step by step."""
    for step in range(1, steps + 1):
        # A no-op unless the call carried a progress token (`_meta.progressToken`).
        await ctx.report_progress(step, steps, f"step {step}")
        await anyio.sleep(0.05)  # spaced out, so they reach the client as separate messages
    record("report", name, steps)
    return {"report": name, "steps": steps}


def broken_pipe(error):
    """Whether an error, or every error in an exception group, is a broken pipe."""
    inner = getattr(error, "exceptions", None)
    if inner:
        return all(broken_pipe(each) for each in inner)
    return isinstance(error, BrokenPipeError)


class AnnouncedServer(uvicorn.Server):
    """uvicorn's server, which says on stderr where it listens once it accepts connections."""

    async def startup(self, sockets=None):
        await super().startup(sockets)
        # `started` is set once the lifespan (the SDK's session manager) is up and the socket
        # is bound and listening; a failed bind exits inside startup() instead.
        if self.started:
            port = self.servers[0].sockets[0].getsockname()[1]
            url = f"http://127.0.0.1:{port}/mcp"
            print(f"tool_server: listening on {url}", file=sys.stderr, flush=True)


def serve_http(server, port):
    """What `server.run("streamable-http", port=port)` does, but announcing readiness: the
    SDK builds the app and hands it to uvicorn with no hook for after the bind."""
    app = server.streamable_http_app(streamable_http_path="/mcp", host="127.0.0.1")
    level = server.settings.log_level.lower()
    # uvicorn's access log goes to stdout, a line per request: a test reading only stderr
    # would leave that pipe to fill up. Its other logs go to stderr.
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level=level, access_log=False)
    # Serves until SIGINT or SIGTERM; uvicorn then shuts down (cancelling calls in flight)
    # and raises the signal again, so the process ends killed by it.
    anyio.run(AnnouncedServer(config).serve)


def executions() -> str:
    """The ledger as it is: every execution so far (a resource)."""
    return LEDGER.read_text(encoding="utf-8") if LEDGER.exists() else ""


def apology(customer: str) -> str:
    """A prompt: an apology to a customer who got an email twice."""
    return f"Write {customer} a short apology for the duplicate email."


def main():
    global LEDGER
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ledger", required=True, help="file that gets one line per execution")
    parser.add_argument("--name", default="ledger-tools", help="the server's name")
    parser.add_argument(
        "--http", type=int, metavar="PORT", help="serve streamable HTTP on 127.0.0.1:PORT/mcp"
    )
    args = parser.parse_args()
    LEDGER = Path(args.ledger)

    server = MCPServer(args.name)
    server.add_tool(send_email)
    # The one tool a proxy may let through without deduplicating: it changes nothing.
    read_only = ToolAnnotations(read_only_hint=True, idempotent_hint=True)
    server.add_tool(lookup_order, annotations=read_only)
    server.add_tool(charge_card)
    server.add_tool(create_ticket)
    server.add_tool(refund_charge)
    server.add_tool(export_report)
    # Not tools: what a proxy passes through untouched.
    server.resource("ledger://executions", mime_type="text/plain")(executions)
    server.prompt()(apology)
    if args.http is not None:
        serve_http(server, args.http)
        return
    try:
        server.run("stdio")  # returns when stdin closes
    except Exception as error:
        # The process that started this server was killed (a proxy, by a test) while a call
        # was in flight: the SDK's answer to it has nowhere to go. Not this server's failure.
        if not broken_pipe(error):
            raise


if __name__ == "__main__":
    main()
