//! The explorer's entry point; `trunk serve` (Trunk.toml at the repository root) builds it.

#[cfg(target_arch = "wasm32")]
fn main() {
    console_error_panic_hook::set_once();
    dama_web::ui::start();
}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    eprintln!("dama-web runs in the browser: `trunk serve` at the repository root");
}
