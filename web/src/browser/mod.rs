//! The browser APIs the explorer uses, each behind a small function: reading picked files,
//! localStorage, fetching through the Cache API (in the page or the worker), downloads, time.

pub mod fetch;
pub mod files;
pub mod storage;

use wasm_bindgen::JsCast;

/// Milliseconds, for speeds and durations (`Date.now()` works in the page and the worker).
pub fn now_ms() -> f64 {
    js_sys::Date::now()
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

/// Offers `bytes` as a file download called `name`.
pub fn download(name: &str, bytes: &[u8], mime: &str) -> Result<(), String> {
    let err = |e: wasm_bindgen::JsValue| format!("download failed: {e:?}");
    let array = js_sys::Array::new();
    array.push(&js_sys::Uint8Array::from(bytes).into());
    let options = web_sys::BlobPropertyBag::new();
    options.set_type(mime);
    let blob =
        web_sys::Blob::new_with_u8_array_sequence_and_options(&array, &options).map_err(err)?;
    let url = web_sys::Url::create_object_url_with_blob(&blob).map_err(err)?;
    let document = web_sys::window()
        .ok_or("no window")?
        .document()
        .ok_or("no document")?;
    let a: web_sys::HtmlAnchorElement = document
        .create_element("a")
        .map_err(err)?
        .dyn_into()
        .map_err(|_| "not an anchor")?;
    a.set_href(&url);
    a.set_download(name);
    a.click();
    web_sys::Url::revoke_object_url(&url).map_err(err)?;
    Ok(())
}

/// An object URL for a picked file (the worker fetches it like any other URL).
pub fn object_url(file: &web_sys::File) -> Result<String, String> {
    web_sys::Url::create_object_url_with_blob(file).map_err(|e| format!("{e:?}"))
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
