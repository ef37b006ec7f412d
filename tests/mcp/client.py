"""An agent's side of examples/mcp_server.rs, written with the official MCP Python SDK.

    python3 tests/mcp/client.py SERVER [SERVER_ARGS...]

starts SERVER (the built example) as an MCP stdio server twice, one session each, the way
an agent that retries and an agent that was restarted would use it:

- session 1 lists the tools, sends the same email twice (a retry after a timeout), charges
  an order, charges another order over the card's limit twice (a declined card, an answer
  with isError), files the same ticket from two concurrent calls (two copies of the agent),
  and refunds the charge three times: the tool asks the user first (an elicitation), who
  declines the first time and approves the second; the third call is a retry;
- session 2, a second server process on the same store, makes the same calls again, and
  charges the same order with another amount, which must be refused.

Every call is a new JSON-RPC request (a new id), as a retry is. It prints what it saw as one
JSON object on stdout: the tools with their idempotentHint, every call with its arguments
and the server's answer, or the MCP error it got (code, message, data), and every question
the server asked the user (the session and the message). Judging
the answers is left to the caller (tests/it/example_mcp_server.rs).
"""

import importlib.metadata
import json
import sys

import anyio
from mcp import ClientSession, StdioServerParameters, types
from mcp.client.stdio import stdio_client

try:
    from mcp.shared.exceptions import MCPError
except ImportError:  # mcp 1.x
    from mcp.shared.exceptions import McpError as MCPError

EMAIL = {
    "to": "ada@example.com",
    "subject": "Your quote Q-2026-0042",
    "body": "Hello Ada, your quote for 5 seats is attached.",
}
CHARGE = {"customer_id": "cus_ada", "order_id": "order-42", "amount_cents": 124900}
CHANGED_CHARGE = {**CHARGE, "amount_cents": 249800}
# Over the fake provider's limit: the card is declined.
DECLINED_CHARGE = {"customer_id": "cus_ada", "order_id": "order-43", "amount_cents": 5000000}
TICKET = {
    "title": "Invoice address for order-42",
    "body": "Ada asks to send the invoice to accounts@ada.example.com.",
}


def refund_of(charged):
    """The refund of a charge the server answered."""
    charge = charged.get("answer") or {}
    return {"charge_id": charge.get("charge_id"), "amount_cents": CHARGE["amount_cents"]}


def wire(model):
    """A result as it travels on the wire (camelCase field names)."""
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


async def call(session, number, calls, tool, arguments):
    seen = {"session": number, "tool": tool, "arguments": arguments}
    try:
        result = wire(await session.call_tool(tool, arguments))
    except MCPError as error:
        seen["error"] = {"code": error.code, "message": error.message, "data": error.data}
    else:
        seen["is_error"] = bool(result.get("isError", False))
        seen["answer"] = result.get("structuredContent")
        seen["text"] = [
            c.get("text") for c in result.get("content", []) if c.get("type") == "text"
        ]
    calls.append(seen)
    return seen


class User:
    """The person behind the agent, asked by the server's elicitations: says no to the
    first question and yes to the others, and remembers every question."""

    def __init__(self):
        self.questions = []
        self.session = None

    async def answer(self, context, params):
        self.questions.append({"session": self.session, "message": params.message})
        if len(self.questions) == 1:
            return types.ElicitResult(action="decline")
        return types.ElicitResult(action="accept", content={"approve": True})


async def session(server, number, calls, tools, user):
    user.session = number
    async with stdio_client(server) as (read, write):
        async with ClientSession(read, write, elicitation_callback=user.answer) as session:
            await session.initialize()
            if number == 1:
                listed = await session.list_tools()
                for tool in listed.tools:
                    annotations = wire(tool.annotations) if tool.annotations else {}
                    tools.append(
                        {"name": tool.name, "idempotentHint": annotations.get("idempotentHint")}
                    )
                # The agent timed out waiting for the email and sends it again.
                await call(session, number, calls, "send_email", EMAIL)
                await call(session, number, calls, "send_email", EMAIL)
                charged = await call(session, number, calls, "charge_card", CHARGE)
                # The card is declined; the agent tries again.
                await call(session, number, calls, "charge_card", DECLINED_CHARGE)
                await call(session, number, calls, "charge_card", DECLINED_CHARGE)
                # Two copies of the agent file the same ticket at the same moment.
                async with anyio.create_task_group() as copies:
                    for _ in range(2):
                        copies.start_soon(call, session, number, calls, "create_ticket", TICKET)
                # The refund asks the user, who says no; the agent asks again and the user
                # says yes; the agent's retry after a timeout must not ask a third time.
                refund = refund_of(charged)
                for _ in range(3):
                    await call(session, number, calls, "refund_charge", refund)
            else:
                # A restarted agent replays the steps it was on.
                await call(session, number, calls, "send_email", EMAIL)
                charged = await call(session, number, calls, "charge_card", CHARGE)
                await call(session, number, calls, "create_ticket", TICKET)
                await call(session, number, calls, "refund_charge", refund_of(charged))
                await call(session, number, calls, "charge_card", DECLINED_CHARGE)
                # A confused agent charges the same order with another amount.
                await call(session, number, calls, "charge_card", CHANGED_CHARGE)


async def main(argv):
    if len(argv) < 2:
        sys.exit(f"usage: {argv[0]} SERVER [SERVER_ARGS...]")
    server = StdioServerParameters(command=argv[1], args=argv[2:])
    calls, tools, user = [], [], User()
    for number in (1, 2):
        await session(server, number, calls, tools, user)
    report = {
        "sdk": f"mcp {importlib.metadata.version('mcp')}",
        "tools": sorted(tools, key=lambda tool: tool["name"]),
        "calls": calls,
        "questions": user.questions,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    anyio.run(main, sys.argv)
