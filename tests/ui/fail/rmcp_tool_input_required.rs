// An MCP tool that may answer `input_required` (rmcp's `CallToolResponse`) cannot be recorded:
// a request for the client's input is never the call's final result.
use rmcp::model::CallToolResponse;
use rmcp::ErrorData;

#[idem::idempotent]
async fn book_flight(flight: String) -> Result<CallToolResponse, ErrorData> {
    let _ = flight;
    Err(ErrorData::internal_error("not yet", None))
}

fn main() {
    let _ = book_flight(String::new());
}
