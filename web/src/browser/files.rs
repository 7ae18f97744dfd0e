//! Reading the files a person picked (`<input type=file multiple>` or `webkitdirectory`).

use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

/// The name to match images by: the path inside a picked folder, else the file name.
pub fn picked_name(file: &web_sys::File) -> String {
    js_sys::Reflect::get(file, &"webkitRelativePath".into())
        .ok()
        .and_then(|v| v.as_string())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| file.name())
}

pub fn list(files: &web_sys::FileList) -> Vec<web_sys::File> {
    (0..files.length()).filter_map(|i| files.get(i)).collect()
}

pub async fn read(file: &web_sys::File) -> Result<Vec<u8>, String> {
    let buffer = JsFuture::from(file.array_buffer())
        .await
        .map_err(|e| format!("reading {}: {e:?}", file.name()))?;
    Ok(js_sys::Uint8Array::new(&buffer).to_vec())
}

/// Every picked file as (name, bytes).
pub async fn read_all(files: &web_sys::FileList) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut out = Vec::new();
    for f in list(files) {
        out.push((picked_name(&f), read(&f).await?));
    }
    Ok(out)
}

/// The `<input>` an event came from.
pub fn input_of(ev: &web_sys::Event) -> Option<web_sys::HtmlInputElement> {
    ev.target()?.dyn_into().ok()
}
