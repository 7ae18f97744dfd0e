//! The explorer's IndexedDB database (`dama-web`): per dataset (keyed by its content
//! fingerprint) a [`SavedSession`], the picked files themselves when the browser has room, one
//! record per curated pair and one per pair scored here ([`crate::persist`]). `last` names the
//! dataset to reopen after a reload.

use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

use super::idb::{Db, IdbError, Op};
use crate::persist::{SavedCuration, SavedScores, SavedSession};
use crate::saving::{Refusal, Writes};

const DB_NAME: &str = "dama-web";
const DB_VERSION: u32 = 1;
const SESSIONS: &str = "sessions";
const FILES: &str = "files";
const CURATION: &str = "curation";
const SCORES: &str = "scores";
const LAST: &str = "last";

impl From<IdbError> for Refusal {
    fn from(e: IdbError) -> Self {
        match e {
            IdbError::Quota => Refusal::Full,
            IdbError::Unavailable(why) => Refusal::Unavailable(why),
            IdbError::Other(why) => Refusal::Other(why),
        }
    }
}

/// Which records a write is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Curation,
    Scores,
}

fn key(fingerprint: &str, rest: &str) -> String {
    format!("{fingerprint}/{rest}")
}

fn prefix(fingerprint: &str) -> String {
    format!("{fingerprint}/")
}

/// Asks the browser to keep this page's storage when disk space runs low (`navigator.storage
/// .persist()`); browsers decide, so this is best effort. True if granted.
pub async fn ask_persistence() -> bool {
    use js_sys::Reflect;
    let Some(w) = web_sys::window() else {
        return false;
    };
    let Ok(storage) = Reflect::get(&w.navigator(), &"storage".into()) else {
        return false;
    };
    let persist = Reflect::get(&storage, &"persist".into())
        .ok()
        .and_then(|f| f.dyn_into::<js_sys::Function>().ok());
    let Some(Ok(p)) = persist.map(|f| f.call0(&storage)) else {
        return false;
    };
    JsFuture::from(js_sys::Promise::from(p))
        .await
        .is_ok_and(|v| v.is_truthy())
}

fn parse_json<T: serde::de::DeserializeOwned>(v: JsValue) -> Option<T> {
    serde_json::from_str(&v.as_string()?).ok()
}

#[derive(Clone)]
pub struct Store(Db);

impl Store {
    pub async fn open() -> Result<Store, Refusal> {
        Ok(Store(
            Db::open(DB_NAME, DB_VERSION, &[SESSIONS, FILES, CURATION, SCORES]).await?,
        ))
    }

    /// Saves the session record and makes it the one to reopen.
    pub async fn save_session(&self, saved: &SavedSession) -> Result<(), Refusal> {
        let json = serde_json::to_string(saved).expect("serialisable");
        self.0
            .write(vec![
                Op::Put {
                    store: SESSIONS,
                    key: saved.fingerprint.clone(),
                    value: json.into(),
                },
                Op::Put {
                    store: SESSIONS,
                    key: LAST.into(),
                    value: saved.fingerprint.clone().into(),
                },
            ])
            .await?;
        Ok(())
    }

    pub async fn session(&self, fingerprint: &str) -> Option<SavedSession> {
        let v = self.0.get(SESSIONS, fingerprint).await.ok()??;
        serde_json::from_str(&v.as_string()?).ok()
    }

    /// The session to reopen after a reload.
    pub async fn last(&self) -> Option<SavedSession> {
        let fp = self.0.get(SESSIONS, LAST).await.ok()??.as_string()?;
        self.session(&fp).await
    }

    /// Keeps the picked files (as the browser's own Blobs: nothing is copied through wasm).
    pub async fn save_files(
        &self,
        fingerprint: &str,
        files: &[web_sys::File],
    ) -> Result<(), Refusal> {
        let mut ops = vec![Op::DeletePrefix {
            store: FILES,
            prefix: prefix(fingerprint),
        }];
        for (k, f) in files.iter().enumerate() {
            ops.push(Op::Put {
                store: FILES,
                key: key(fingerprint, &format!("{k:06}")),
                value: f.clone().into(),
            });
        }
        Ok(self.0.write(ops).await?)
    }

    pub async fn drop_files(&self, fingerprint: &str) -> Result<(), Refusal> {
        Ok(self
            .0
            .write(vec![Op::DeletePrefix {
                store: FILES,
                prefix: prefix(fingerprint),
            }])
            .await?)
    }

    /// The kept files' bytes, in the order they were picked.
    pub async fn files(&self, fingerprint: &str) -> Result<Vec<Vec<u8>>, Refusal> {
        let mut out = Vec::new();
        for v in self.0.get_prefix(FILES, &prefix(fingerprint)).await? {
            let blob: web_sys::Blob = v
                .dyn_into()
                .map_err(|_| Refusal::Other("a kept file is not a Blob".into()))?;
            let buf = JsFuture::from(blob.array_buffer())
                .await
                .map_err(|e| Refusal::Other(super::idb::describe(&e).1))?;
            out.push(js_sys::Uint8Array::new(&buf).to_vec());
        }
        Ok(out)
    }

    /// Puts and deletes one kind of per-pair record, in one transaction.
    pub async fn write(
        &self,
        fingerprint: &str,
        kind: Kind,
        writes: &Writes,
    ) -> Result<(), Refusal> {
        let store = match kind {
            Kind::Curation => CURATION,
            Kind::Scores => SCORES,
        };
        let ops = writes
            .iter()
            .map(|(id, value)| {
                let key = key(fingerprint, id);
                match value {
                    Some(json) => Op::Put {
                        store,
                        key,
                        value: JsValue::from_str(json),
                    },
                    None => Op::Delete { store, key },
                }
            })
            .collect();
        Ok(self.0.write(ops).await?)
    }

    /// Forgets every score saved for a dataset (to make room for its curation).
    pub async fn drop_scores(&self, fingerprint: &str) -> Result<(), Refusal> {
        Ok(self
            .0
            .write(vec![Op::DeletePrefix {
                store: SCORES,
                prefix: prefix(fingerprint),
            }])
            .await?)
    }

    /// Every saved record of a dataset.
    pub async fn records(
        &self,
        fingerprint: &str,
    ) -> Result<(Vec<SavedCuration>, Vec<SavedScores>), Refusal> {
        let curation = self
            .0
            .get_prefix(CURATION, &prefix(fingerprint))
            .await?
            .into_iter()
            .filter_map(parse_json)
            .collect();
        let scores = self
            .0
            .get_prefix(SCORES, &prefix(fingerprint))
            .await?
            .into_iter()
            .filter_map(parse_json)
            .collect();
        Ok((curation, scores))
    }
}
