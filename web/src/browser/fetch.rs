//! Fetching a model file from the page or the worker, optionally through the Cache API, so a
//! hub model is downloaded once per browser profile.

use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

/// The Cache API bucket for model files; bump the suffix to drop old entries.
pub const CACHE_NAME: &str = "dama-models-v1";

/// A failed fetch in plain words: a network failure (offline, the site unreachable, blocked)
/// says so instead of showing the browser's `TypeError` and its stack.
fn js_err(what: &str) -> impl Fn(JsValue) -> String + '_ {
    move |e| {
        let (name, message) = super::idb::describe(&e);
        if name == "TypeError" {
            format!(
                "could not download {what}: the browser is offline, or the site cannot be reached"
            )
        } else {
            format!(
                "{what}: {}",
                if message.is_empty() { name } else { message }
            )
        }
    }
}

async fn fetch(url: &str) -> Result<web_sys::Response, String> {
    let global = js_sys::global();
    let promise = if let Some(w) = global.dyn_ref::<web_sys::Window>() {
        w.fetch_with_str(url)
    } else {
        global
            .unchecked_into::<web_sys::WorkerGlobalScope>()
            .fetch_with_str(url)
    };
    let resp: web_sys::Response = JsFuture::from(promise)
        .await
        .map_err(js_err(url))?
        .unchecked_into();
    if !resp.ok() {
        return Err(format!("{url}: HTTP {}", resp.status()));
    }
    Ok(resp)
}

async fn open_cache() -> Option<web_sys::Cache> {
    let caches = js_sys::Reflect::get(&js_sys::global(), &"caches".into()).ok()?;
    let caches: web_sys::CacheStorage = caches.dyn_into().ok()?;
    JsFuture::from(caches.open(CACHE_NAME))
        .await
        .ok()?
        .dyn_into()
        .ok()
}

async fn body(resp: web_sys::Response, url: &str) -> Result<Vec<u8>, String> {
    let buf = JsFuture::from(resp.array_buffer().map_err(js_err(url))?)
        .await
        .map_err(js_err(url))?;
    Ok(js_sys::Uint8Array::new(&buf).to_vec())
}

/// The bytes at `url`; with `cache`, from the Cache API when there, else fetched and stored
/// (where the Cache API is missing, e.g. on plain http to another host, it just fetches).
/// Returns the bytes and whether they came from the cache.
pub async fn fetch_bytes(url: &str, cache: bool) -> Result<(Vec<u8>, bool), String> {
    let cache = if cache { open_cache().await } else { None };
    if let Some(c) = &cache
        && let Ok(hit) = JsFuture::from(c.match_with_str(url)).await
        && let Ok(resp) = hit.dyn_into::<web_sys::Response>()
    {
        return Ok((body(resp, url).await?, true));
    }
    let resp = fetch(url).await?;
    if let Some(c) = &cache {
        let copy = resp.clone().map_err(js_err(url))?;
        // A failed put (quota) only costs a download next time.
        let _ = JsFuture::from(c.put_with_str(url, &copy)).await;
    }
    Ok((body(resp, url).await?, false))
}
