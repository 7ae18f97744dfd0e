//! AMBER on the reference's fixture, exact and with a similarity table.

use super::*;

fn amber(extra: &[&dyn AsRef<std::ffi::OsStr>], out: &Path) -> Output {
    let f = fixtures();
    let (data, answers, wordnet) = (
        f.join("amber/data"),
        f.join("amber/answers.json"),
        f.join("wordnet"),
    );
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
        &"amber",
        &"--data",
        &data,
        &"--answers",
        &answers,
        &"--wordnet",
        &wordnet,
        &"--out",
        &out,
    ];
    args.extend_from_slice(extra);
    eval(&args)
}

fn check_amber(out: &Path, golden: &str) -> Value {
    let g = read_json(&fixtures().join("amber").join(golden));
    let summary = read_json(&out.join("summary.json"));
    assert_close(&summary, &g["summary"], "summary");
    let details = read_jsonl(&out.join("details.jsonl"));
    let want = g["details"].as_array().unwrap();
    assert_eq!(details.len(), want.len());
    for (i, (d, w)) in details.iter().zip(want).enumerate() {
        assert_close(d, w, &format!("details[{i}]"));
    }
    summary
}

#[test]
fn amber_equals_the_reference_exact_and_with_a_similarity_table() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("exact");
    let said = ok(&amber(&[], &out));
    let s = check_amber(&out, "golden_exact_untagged.json");
    assert_eq!(s["similarity"], "exact");
    assert!(said.contains("no --similarity table"), "{said}");
    let amber_score = format!("{:.2}", s["AMBER"].as_f64().unwrap());
    assert!(said.contains(&amber_score), "{said}");

    let out = dir.path().join("table");
    let f = fixtures();
    let (table, tagger) = (f.join("amber/similarity.tsv"), f.join("tagger"));
    ok(&amber(
        &[&"--similarity", &table, &"--tagger", &tagger],
        &out,
    ));
    check_amber(&out, "golden_table_tagged.json");

    // A threshold under what the table lists cannot be decided: refused.
    let out = dir.path().join("low");
    refused(
        &amber(&[&"--similarity", &table, &"--threshold", &"0.1"], &out),
        &out,
        &["below the table's floor"],
    );
}
