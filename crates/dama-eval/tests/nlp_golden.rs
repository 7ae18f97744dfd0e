//! NLTK's `sent_tokenize`, `word_tokenize`, `WordNetLemmatizer().lemmatize` and `pos_tag`
//! (with the fixture's tagger) on every text of the fixtures, against real NLTK 3.10.4
//! (scripts/eval_reference/make_fixtures.py).

mod common;

use dama_eval::nlp::PunktTokenizer;

#[test]
fn nltk_on_every_fixture_text() {
    let rows = common::read_jsonl(common::fixtures().join("nlp.jsonl"));
    assert!(rows.len() > 500);
    let (tokenizer, lemmatizer, tagger) =
        (common::tokenizer(), common::lemmatizer(), common::tagger());
    let punkt = PunktTokenizer::english();
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect()
    };
    let mut failures = Vec::new();
    for row in &rows {
        let text = row["text"].as_str().unwrap();
        let sentences: Vec<String> = punkt
            .sentences(text)
            .into_iter()
            .map(str::to_owned)
            .collect();
        let tokens = tokenizer.tokenize(text);
        let lower = tokenizer.tokenize(&text.to_lowercase());
        let lemma = |ts: &[String]| {
            ts.iter()
                .map(|t| lemmatizer.lemmatize(t))
                .collect::<Vec<_>>()
        };
        let checks = [
            ("sentences", sentences, strings(&row["sentences"])),
            ("tokens", tokens.clone(), strings(&row["tokens"])),
            ("tags", tagger.tag(&tokens), strings(&row["tags"])),
            ("lemmas", lemma(&tokens), strings(&row["lemmas"])),
            ("lemmas_lower", lemma(&lower), strings(&row["lemmas_lower"])),
        ];
        for (what, got, want) in checks {
            if got != want {
                failures.push(format!(
                    "{what} of {text:?}:\n  got  {got:?}\n  want {want:?}"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} differences:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
