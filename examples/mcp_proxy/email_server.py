"""A tool server an agent can send email with: the MCP server that `idem mcp-proxy` guards.

    python email_server.py [--outbox PATH]

An MCP stdio server, written with the official MCP Python SDK, with one tool, `send_email`.
"Sending" an email appends one line to the outbox file (outbox.log in the current
directory by default), so you can count how many emails really went out.
"""

import argparse
from pathlib import Path

from mcp.server.mcpserver import MCPServer

server = MCPServer("email")
outbox = Path("outbox.log")


@server.tool()
def send_email(to: str, subject: str, body: str) -> dict[str, str]:
    """Send an email."""
    with outbox.open("a", encoding="utf-8") as sent:
        sent.write(f"to={to} subject={subject!r}\n")
    message_id = f"msg-{len(outbox.read_text(encoding='utf-8').splitlines())}"
    return {"message_id": message_id, "to": to}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="An MCP server with a send_email tool.")
    parser.add_argument("--outbox", default="outbox.log", help="file that gets a line per email")
    outbox = Path(parser.parse_args().outbox)
    server.run()
