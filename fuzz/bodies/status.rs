// Shared by the `status_table` and `manager` fuzz bodies (each includes it
// with `include!("status.rs")`, with a `ConnectionStatus` in scope).

/// A `ConnectionStatus` decoded from fuzz input.
#[derive(arbitrary::Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub enum St {
    Connected,
    Connecting,
    Disconnected,
    Failed,
}

impl St {
    fn get(self) -> ConnectionStatus {
        match self {
            St::Connected => ConnectionStatus::Connected,
            St::Connecting => ConnectionStatus::Connecting,
            St::Disconnected => ConnectionStatus::Disconnected,
            St::Failed => ConnectionStatus::Failed,
        }
    }
}
