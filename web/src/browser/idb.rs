//! IndexedDB, as small async functions over string keys: open a database (creating its object
//! stores), write many records in one transaction, read one, read or delete every record under a
//! key prefix. A refused transaction (the quota is full) is told apart from other failures, so
//! that the saver can react to it.
//!
//! Requests and transactions become promises through two tiny JavaScript functions built once
//! (`Function::new_with_args`): no Rust closure has to outlive its event, and the worker build
//! (`--target no-modules`, where wasm-bindgen's inline JS is unavailable) compiles the same code.

use js_sys::{Array, Function};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{IdbDatabase, IdbKeyRange, IdbTransactionMode};

/// Why IndexedDB refused.
#[derive(Debug, Clone, PartialEq)]
pub enum IdbError {
    /// `QuotaExceededError`: the storage for this page is full.
    Quota,
    /// IndexedDB is missing or blocked.
    Unavailable(String),
    Other(String),
}

/// A JavaScript error's name and message, without its stack (which would flood the page).
pub fn describe(e: &JsValue) -> (String, String) {
    if let Some(d) = e.dyn_ref::<web_sys::DomException>() {
        return (d.name(), d.message());
    }
    if let Some(err) = e.dyn_ref::<js_sys::Error>() {
        return (err.name().into(), err.message().into());
    }
    (
        String::new(),
        e.as_string().unwrap_or_else(|| "unknown error".to_owned()),
    )
}

fn classify(e: JsValue) -> IdbError {
    let (name, message) = describe(&e);
    if name == "QuotaExceededError" {
        IdbError::Quota
    } else if message.is_empty() {
        IdbError::Other(name)
    } else {
        IdbError::Other(format!("{name}: {message}"))
    }
}

struct Helpers {
    /// `r => Promise`: resolves with `r.result` on success, rejects with `r.error`.
    request: Function,
    /// `t => Promise`: resolves when `t` commits, rejects with its error when it aborts.
    transaction: Function,
    /// `(name, version, stores) => Promise<IDBDatabase>`, creating missing stores.
    open: Function,
}

thread_local! {
    static HELPERS: Helpers = Helpers {
        request: Function::new_with_args(
            "r",
            "return new Promise((ok, no) => { r.onsuccess = () => ok(r.result); r.onerror = (e) => { e.preventDefault(); no(r.error); }; });",
        ),
        transaction: Function::new_with_args(
            "t",
            "return new Promise((ok, no) => { t.oncomplete = () => ok(); t.onerror = (e) => e.preventDefault(); t.onabort = () => no(t.error || new DOMException('the transaction was aborted', 'AbortError')); });",
        ),
        open: Function::new_with_args(
            "name, version, stores",
            "return new Promise((ok, no) => { \
               let q; try { q = indexedDB.open(name, version); } catch (e) { no(e); return; } \
               q.onupgradeneeded = () => { for (const s of stores) if (!q.result.objectStoreNames.contains(s)) q.result.createObjectStore(s); }; \
               q.onsuccess = () => ok(q.result); \
               q.onerror = () => no(q.error); \
               q.onblocked = () => no(new DOMException('another tab holds an older version of the database open', 'UnknownError')); });",
        ),
    };
}

async fn promise(
    f: impl FnOnce(&Helpers) -> Result<JsValue, JsValue>,
) -> Result<JsValue, IdbError> {
    let p = HELPERS.with(f).map_err(classify)?;
    JsFuture::from(js_sys::Promise::from(p))
        .await
        .map_err(classify)
}

/// Every key starting with `prefix`.
fn prefix_range(prefix: &str) -> Result<IdbKeyRange, IdbError> {
    IdbKeyRange::bound(
        &JsValue::from_str(prefix),
        &JsValue::from_str(&format!("{prefix}\u{ffff}")),
    )
    .map_err(classify)
}

/// One write of a transaction.
pub enum Op {
    Put {
        store: &'static str,
        key: String,
        value: JsValue,
    },
    Delete {
        store: &'static str,
        key: String,
    },
    DeletePrefix {
        store: &'static str,
        prefix: String,
    },
}

impl Op {
    fn store(&self) -> &'static str {
        match self {
            Op::Put { store, .. } | Op::Delete { store, .. } | Op::DeletePrefix { store, .. } => {
                store
            }
        }
    }
}

#[derive(Clone)]
pub struct Db(IdbDatabase);

impl Db {
    pub async fn open(name: &str, version: u32, stores: &[&str]) -> Result<Db, IdbError> {
        let global = js_sys::global();
        let has = js_sys::Reflect::get(&global, &"indexedDB".into()).unwrap_or(JsValue::UNDEFINED);
        if has.is_undefined() || has.is_null() {
            return Err(IdbError::Unavailable("IndexedDB is not available".into()));
        }
        let list: Array = stores.iter().map(|s| JsValue::from_str(s)).collect();
        let db = promise(|h| {
            h.open
                .call3(&JsValue::NULL, &name.into(), &JsValue::from(version), &list)
        })
        .await
        .map_err(|e| match e {
            IdbError::Other(why) => IdbError::Unavailable(why),
            other => other,
        })?;
        Ok(Db(db.unchecked_into()))
    }

    /// Runs `ops` in one readwrite transaction: all of them land, or none.
    pub async fn write(&self, ops: Vec<Op>) -> Result<(), IdbError> {
        if ops.is_empty() {
            return Ok(());
        }
        let mut names: Vec<&'static str> = ops.iter().map(Op::store).collect();
        names.sort_unstable();
        names.dedup();
        let list: Array = names.iter().map(|s| JsValue::from_str(s)).collect();
        let tx = self
            .0
            .transaction_with_str_sequence_and_mode(&list, IdbTransactionMode::Readwrite)
            .map_err(classify)?;
        for op in ops {
            let store = tx.object_store(op.store()).map_err(classify)?;
            match op {
                Op::Put { key, value, .. } => {
                    store.put_with_key(&value, &key.into()).map_err(classify)?;
                }
                Op::Delete { key, .. } => {
                    store.delete(&key.into()).map_err(classify)?;
                }
                Op::DeletePrefix { prefix, .. } => {
                    store
                        .delete(&prefix_range(&prefix)?.into())
                        .map_err(classify)?;
                }
            }
        }
        promise(|h| h.transaction.call1(&JsValue::NULL, &tx)).await?;
        Ok(())
    }

    pub async fn get(&self, store: &str, key: &str) -> Result<Option<JsValue>, IdbError> {
        let tx = self.0.transaction_with_str(store).map_err(classify)?;
        let req = tx
            .object_store(store)
            .map_err(classify)?
            .get(&key.into())
            .map_err(classify)?;
        let v = promise(|h| h.request.call1(&JsValue::NULL, &req)).await?;
        Ok((!v.is_undefined()).then_some(v))
    }

    /// The values of every record whose key starts with `prefix`, in key order.
    pub async fn get_prefix(&self, store: &str, prefix: &str) -> Result<Vec<JsValue>, IdbError> {
        let tx = self.0.transaction_with_str(store).map_err(classify)?;
        let req = tx
            .object_store(store)
            .map_err(classify)?
            .get_all_with_key(&prefix_range(prefix)?.into())
            .map_err(classify)?;
        let v = promise(|h| h.request.call1(&JsValue::NULL, &req)).await?;
        Ok(Array::from(&v).iter().collect())
    }
}
