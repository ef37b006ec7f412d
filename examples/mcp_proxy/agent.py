"""An agent that sends the same email three times, as agents do: a retry after a timeout,
then a retry after the agent itself was restarted.

    python agent.py -- COMMAND [ARGS...]

starts COMMAND as an MCP stdio server (the email server, or `idem mcp-proxy` in front of
it), calls `send_email`, calls it again as a new request (the first answer "timed out"),
then disconnects, starts the server command again, and calls it a third time. Without a
proxy the email goes out three times; with `idem mcp-proxy` in front, once.
"""

import json
import os
import sys

import anyio
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

EMAIL = {
    "to": "ada@example.com",
    "subject": "Your quote Q-2026-0042",
    "body": "Hello Ada, your quote for 5 seats is attached.",
}


async def send(session, label):
    """Call send_email and print one transcript line with what came back."""
    result = await session.call_tool("send_email", EMAIL)
    answer = result.structured_content
    if answer is None:  # an error result, or a server without structured output
        answer = [block.text for block in result.content if block.type == "text"]
    print(f"{label} -> {json.dumps(answer)}", flush=True)


async def main(command):
    # The environment is passed on, so a proxy started here sees its settings.
    server = StdioServerParameters(command=command[0], args=command[1:], env=dict(os.environ))
    async with stdio_client(server) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            await send(session, "session 1: send_email")
            # No answer in time, says the agent's framework: it sends the email again.
            await send(session, "session 1: retry")
    # The agent crashed and was restarted: a new connection, a new server process.
    async with stdio_client(server) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            await send(session, "session 2: retry after restart")


if __name__ == "__main__":
    if "--" not in sys.argv or sys.argv.index("--") == len(sys.argv) - 1:
        sys.exit(f"usage: {sys.argv[0]} -- COMMAND [ARGS...]")
    anyio.run(main, sys.argv[sys.argv.index("--") + 1 :])
