//! Where answers come from, and what --model needs.

use super::*;

use super::design::*;

#[test]
fn answers_come_from_a_file_or_a_model_never_both_or_neither() {
    let dir = tempfile::tempdir().unwrap();
    let d = design(dir.path());
    let out = dir.path().join("out");
    let common: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
        &"objhal",
        &"--coco",
        &d.coco,
        &"--synonyms",
        &d.synonyms,
        &"--wordnet",
        &d.wordnet,
        &"--out",
        &out,
    ];
    let with = |extra: &[&dyn AsRef<std::ffi::OsStr>]| {
        let mut args = common.clone();
        args.extend_from_slice(extra);
        eval(&args)
    };
    refused(&with(&[]), &out, &["no answers: pass --answers FILE"]);
    refused(
        &with(&[&"--answers", &d.answers, &"--model", &"m"]),
        &out,
        &["pass --answers or --model, not both"],
    );
    refused(
        &with(&[&"--model", &"m"]),
        &out,
        &["--model needs --questions"],
    );
    // --model reaches the model only after the benchmark's images are checked.
    let cache = dir.path().join("hf-cache");
    refused(
        &with(&[
            &"--model",
            &"some/model",
            &"--offline",
            &"--hf-cache",
            &cache,
            &"--questions",
            &d.questions,
        ]),
        &out,
        &["model `some/model` is not (completely) in the Hugging Face cache"],
    );
    refused(
        &with(&[&"--answers", &d.answers, &"--llm-model", &"m"]),
        &out,
        &["are for --extractor llm"],
    );
    // AMBER: --model needs the images, and each query's image must be there.
    let empty = dir.path().join("no-images");
    std::fs::create_dir_all(&empty).unwrap();
    let run = eval(&[
        &"amber",
        &"--data",
        &fixtures().join("amber/data"),
        &"--model",
        &"m",
        &"--images",
        &empty,
        &"--wordnet",
        &d.wordnet,
        &"--out",
        &out,
    ]);
    refused(
        &run,
        &out,
        &[
            "query_all.json, record #1 (id 1)",
            "field `image` names AMBER_1.jpg",
        ],
    );
}
