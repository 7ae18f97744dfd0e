//! Saving a file the page produces a chunk at a time. Where the browser has the File System
//! Access API (`showSaveFilePicker`), the person picks the file and each chunk is written to it
//! as it is made; the file is saved once `close()` resolves, which the page can say. Elsewhere
//! the chunks become the parts of a Blob (held by the browser, not in wasm memory) offered as a
//! download; whether the browser then saved it is not visible to the page, so it says "offered",
//! and the object URL stays valid for a while (revoking it at once can cancel the download).

use js_sys::{Array, Reflect, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

use super::idb::describe;

/// Where the chunks go.
pub enum Sink {
    File(web_sys::FileSystemWritableFileStream),
    Parts(Array),
}

/// How a finished file reached the person.
pub enum Finished {
    /// Written and closed through the File System Access API.
    Saved,
    /// Offered as a download from this object URL (revoke it later).
    Offered { url: String },
}

fn js(what: &str) -> impl Fn(JsValue) -> String + '_ {
    move |e| {
        let (name, message) = describe(&e);
        format!(
            "{what}: {}",
            if message.is_empty() { name } else { message }
        )
    }
}

fn save_picker() -> Option<js_sys::Function> {
    let w = web_sys::window()?;
    Reflect::get(&w, &"showSaveFilePicker".into())
        .ok()?
        .dyn_into()
        .ok()
}

/// Opens a sink for a file called `name`: asks where to save it when the browser can;
/// `Ok(None)` when the person cancelled that question.
pub async fn open(
    name: &str,
    description: &str,
    mime: &str,
    ext: &str,
) -> Result<Option<Sink>, String> {
    let Some(picker) = save_picker() else {
        return Ok(Some(Sink::Parts(Array::new())));
    };
    let accept = js_sys::Object::new();
    let exts: Array = [JsValue::from_str(ext)].into_iter().collect();
    let _ = Reflect::set(&accept, &mime.into(), &exts);
    let kind = js_sys::Object::new();
    let _ = Reflect::set(&kind, &"description".into(), &description.into());
    let _ = Reflect::set(&kind, &"accept".into(), &accept);
    let options = js_sys::Object::new();
    let _ = Reflect::set(&options, &"suggestedName".into(), &name.into());
    let types: Array = [JsValue::from(kind)].into_iter().collect();
    let _ = Reflect::set(&options, &"types".into(), &types);
    let window = web_sys::window().ok_or("no window")?;
    let promise = picker
        .call1(&window, &options)
        .map_err(js("the save dialog"))?;
    let handle = match JsFuture::from(js_sys::Promise::from(promise)).await {
        Ok(h) => h,
        Err(e) if describe(&e).0 == "AbortError" => return Ok(None),
        Err(e) => return Err(js("the save dialog")(e)),
    };
    let handle: web_sys::FileSystemFileHandle = handle
        .dyn_into()
        .map_err(|_| "the save dialog gave no file")?;
    let writable = JsFuture::from(handle.create_writable())
        .await
        .map_err(js("opening the file"))?;
    Ok(Some(Sink::File(writable.unchecked_into())))
}

impl Sink {
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), String> {
        match self {
            Sink::File(w) => {
                let p = w
                    .write_with_u8_array(chunk)
                    .map_err(js("writing the file"))?;
                JsFuture::from(p).await.map_err(js("writing the file"))?;
            }
            Sink::Parts(parts) => {
                parts.push(&Uint8Array::from(chunk));
            }
        }
        Ok(())
    }

    pub async fn finish(self, name: &str, mime: &str) -> Result<Finished, String> {
        match self {
            Sink::File(w) => {
                JsFuture::from(w.close())
                    .await
                    .map_err(js("closing the file"))?;
                Ok(Finished::Saved)
            }
            Sink::Parts(parts) => {
                let options = web_sys::BlobPropertyBag::new();
                options.set_type(mime);
                let blob = web_sys::Blob::new_with_u8_array_sequence_and_options(&parts, &options)
                    .map_err(js("building the download"))?;
                let url = web_sys::Url::create_object_url_with_blob(&blob)
                    .map_err(js("building the download"))?;
                let document = web_sys::window()
                    .and_then(|w| w.document())
                    .ok_or("no document")?;
                let a: web_sys::HtmlAnchorElement = document
                    .create_element("a")
                    .map_err(js("building the download"))?
                    .unchecked_into();
                a.set_href(&url);
                a.set_download(name);
                a.click();
                Ok(Finished::Offered { url })
            }
        }
    }

    /// Gives up on a file being written (an error in the middle).
    pub async fn abort(self) {
        if let Sink::File(w) = self {
            let _ = JsFuture::from(w.abort()).await;
        }
    }
}

pub fn revoke(url: &str) {
    let _ = web_sys::Url::revoke_object_url(url);
}
