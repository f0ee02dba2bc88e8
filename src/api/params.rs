//! Params into typed values, with errors that name the field.

use jsonrpsee::types::Params;
use serde::de::DeserializeOwned;

use crate::protocol::describe_serde_error;
use crate::rpc::RpcError;

/// Parses a method's params. Absent or null params read as `{}`, so a method whose fields
/// are all optional accepts a bare request.
pub fn parse<T: DeserializeOwned>(params: &Params<'_>) -> Result<T, RpcError> {
    let raw = params.as_str().unwrap_or("{}");
    let mut de = serde_json::Deserializer::from_str(raw);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let message = describe_serde_error(e.inner());
        if path == "." || path.is_empty() || message.contains('`') {
            RpcError::invalid_params(message)
        } else {
            RpcError::invalid_params(format!("{path}: {message}"))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::initialize::InitializeParams;

    fn err(raw: Option<&str>) -> String {
        parse::<InitializeParams>(&Params::new(raw))
            .unwrap_err()
            .message
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(err(None), "Invalid params: missing field `clientInfo`");
        assert_eq!(
            err(Some(
                r#"{"clientInfo":{"name":"a","version":"1"},"capabilities":{"experimentalApi":"yes"}}"#
            )),
            "Invalid params: capabilities.experimentalApi: invalid type: string, expected a boolean"
        );
        assert_eq!(
            err(Some(r#"{"clientInfo":{"name":"a"}}"#)),
            "Invalid params: missing field `version`"
        );
    }
}
