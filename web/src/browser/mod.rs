//! The browser APIs the explorer uses, each behind a small function: reading picked files,
//! IndexedDB ([`idb`], and the explorer's stores in [`store`]), fetching through the Cache API
//! (in the page or the worker), streamed downloads, time.

pub mod download;
pub mod fetch;
pub mod files;
pub mod idb;
pub mod store;

use wasm_bindgen::JsCast;

/// Milliseconds, for speeds and durations (`Date.now()` works in the page and the worker).
pub fn now_ms() -> f64 {
    js_sys::Date::now()
}

/// Lets the browser run other tasks (input, painting) before continuing a long job.
pub async fn next_tick() {
    sleep_ms(0).await
}

/// Resumes after `ms` milliseconds (in the page or a worker).
pub async fn sleep_ms(ms: u32) {
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        let global = js_sys::global();
        let set: Option<js_sys::Function> = js_sys::Reflect::get(&global, &"setTimeout".into())
            .ok()
            .and_then(|f| f.dyn_into().ok());
        match set {
            Some(set) => {
                let _ = set.call2(&global, &resolve, &ms.into());
            }
            None => {
                let _ = resolve.call0(&wasm_bindgen::JsValue::NULL);
            }
        }
    });
    let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
}

/// `href` resolved against the page's address (the worker is started from a blob URL, against
/// which relative URLs would not resolve).
pub fn absolute_url(href: &str) -> Result<String, String> {
    let base = web_sys::window()
        .ok_or("no window")?
        .location()
        .href()
        .map_err(|_| "no location")?;
    web_sys::Url::new_with_base(href, &base)
        .map(|u| u.href())
        .map_err(|_| format!("`{href}` is not a URL"))
}

/// An object URL for a picked file (the worker fetches it like any other URL).
pub fn object_url(file: &web_sys::File) -> Result<String, String> {
    web_sys::Url::create_object_url_with_blob(file).map_err(|e| idb::describe(&e).1)
}

/// A `data:` URL showing encoded image bytes.
pub fn image_data_url(bytes: &[u8]) -> String {
    use base64::Engine;
    let mime = match dama_data::image::extension_of(bytes) {
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "bmp" => "image/bmp",
        _ => "image/png",
    };
    format!(
        "data:{mime};base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}
