//! localStorage: the saved curation of each dataset (see [`crate::persist`]).

fn local() -> Option<web_sys::Storage> {
    web_sys::window()?.local_storage().ok()?
}

pub fn get(key: &str) -> Option<String> {
    local()?.get_item(key).ok()?
}

/// Fails when storage is unavailable or full (about 5 MB per site).
pub fn set(key: &str, value: &str) -> Result<(), String> {
    local()
        .ok_or("localStorage is not available")?
        .set_item(key, value)
        .map_err(|e| format!("localStorage refused {} bytes: {e:?}", value.len()))
}
