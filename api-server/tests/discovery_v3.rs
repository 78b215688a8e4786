//! What stock Kubernetes clients read before anything else: `/version`, the OpenAPI v3
//! index and group-version document, and the `all` category in discovery.

mod common;

use common::TestServer;
use crds::{KindClass, kinds};
use http::StatusCode;
use serde_json::json;

#[tokio::test]
async fn version_openapi_v3_and_categories() {
    let s = TestServer::start(100).await;
    let (code, version) = s.get("/version").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(version["major"], "1");
    assert!(
        version["minor"]
            .as_str()
            .is_some_and(|m| m.parse::<u32>().is_ok())
    );
    assert!(version["gitVersion"].as_str().unwrap().starts_with("v1."));

    let (code, index) = s.get("/openapi/v3").await;
    assert_eq!(code, StatusCode::OK);
    let url = index["paths"]["apis/startos.dev/v1alpha1"]["serverRelativeURL"]
        .as_str()
        .expect("the group version is in the index")
        .to_owned();
    let (code, doc) = s.get(&url).await;
    assert_eq!(code, StatusCode::OK, "{url}");
    assert_eq!(doc["openapi"], "3.0.0");
    let gvk = json!({"group": "startos.dev", "version": "v1alpha1", "kind": "Package"});
    assert_eq!(
        doc["components"]["schemas"]["Package"]["x-kubernetes-group-version-kind"],
        json!([gvk])
    );
    let patch = &doc["paths"]["/apis/startos.dev/v1alpha1/packages/{name}"]["patch"];
    assert_eq!(patch["x-kubernetes-group-version-kind"], gvk);
    assert!(
        patch["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "fieldValidation")
    );

    let (_, list) = s.get("/apis/startos.dev/v1alpha1").await;
    for kind in kinds() {
        let entry = list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == kind.plural)
            .unwrap();
        let in_all = entry["categories"] == json!(["all"]);
        assert_eq!(in_all, kind.class == KindClass::User, "{}", kind.plural);
    }
}
