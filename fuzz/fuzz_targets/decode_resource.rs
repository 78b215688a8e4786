//! Resource decoding as the store and the API do it: YAML (a file in `desired/`, an apply
//! body) or JSON (a REST body) into an object, then the kind's validation. Nothing may panic.
//!
//! Run locally (not in CI): `cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run decode_resource`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let yaml = std::str::from_utf8(data).ok().and_then(|s| serde_saphyr::from_str::<crds::Object>(s).ok());
    let json = serde_json::from_slice::<crds::Object>(data).ok();
    for obj in yaml.into_iter().chain(json) {
        if let Some(kind) = crds::kind_by_name(&obj.kind) {
            if let Ok(valid) = kind.validate(&obj) {
                // A normalized spec must validate again to the same value.
                let again = kind.validate(&valid).expect("normalized objects stay valid");
                assert_eq!(again.spec, valid.spec);
            }
            if let Some(status) = &obj.status {
                let _ = kind.validate_status(status);
            }
        }
    }
});
