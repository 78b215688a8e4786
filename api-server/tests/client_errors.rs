//! The client crate reads the server's `Status` answers back into the store errors they
//! came from: the two sides of one wire format, kept in agreement here.

use api_client::store_error;
use api_server::Status;
use crds::ValidationErrors;
use http::StatusCode;
use store::StoreError;

#[test]
fn statuses_become_the_same_store_errors() {
    let cases = [
        StoreError::not_found("Package", "a"),
        StoreError::AlreadyExists {
            kind: "Package".into(),
            name: "a".into(),
        },
        StoreError::conflict("Package", "a", "stale"),
        StoreError::invalid("Package", "a", ValidationErrors::single("spec.x", "bad")),
        StoreError::Gone {
            requested: "ab-1".into(),
            current: "ab-9".into(),
        },
        StoreError::BadRequest("nope".into()),
        StoreError::Unsupported("not here".into()),
    ];
    for err in cases {
        let status = Status::from(&err);
        let code = StatusCode::from_u16(status.code).unwrap();
        let body = serde_json::to_vec(&status).unwrap();
        let back = store_error(code, &body, "Package", "a");
        assert_eq!(back.to_string(), err.to_string());
    }
}
