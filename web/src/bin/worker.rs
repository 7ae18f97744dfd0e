//! The scoring worker's entry point; trunk builds it as `worker.js` + `worker_bg.wasm`
//! (`data-type="worker"` in `web/index.html`).

#[cfg(target_arch = "wasm32")]
fn main() {
    use gloo_worker::Registrable;
    console_error_panic_hook::set_once();
    dama_web::worker::ScoringWorker::registrar().register();
}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    eprintln!("the scoring worker runs in the browser: `trunk serve` at the repository root");
}
