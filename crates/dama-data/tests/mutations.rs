//! The record classifier under random damage: good JSONL records mutated the ways scraped data
//! breaks (bytes cut off, fields swapped, values of random types, images truncated or replaced)
//! and read among untouched good records. Whatever the damage: no panic, every line either comes
//! out as a pair or is reported as a skipped record with its line, and the untouched records
//! come out exactly as they do alone.

use dama_data::{ImageMap, ReadOptions, read_bytes};
use proptest::prelude::*;
use serde_json::{Value, json};

fn png(seed: u8) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    image::RgbImage::from_pixel(3 + seed as u32 % 4, 2, image::Rgb([seed, 9, 200]))
        .write_to(&mut out, image::ImageFormat::Png)
        .unwrap();
    out.into_inner()
}

fn good(i: usize) -> Value {
    json!({"id": format!("r{i}"), "image": format!("img{}.png", i % 3), "question": "What is it?",
           "chosen": format!("A shape number {i}."), "rejected": "A dog.", "idx": i})
}

fn images() -> ImageMap {
    let mut map: ImageMap = (0..3u8).map(|i| (format!("img{i}.png"), png(i))).collect();
    map.insert("cut.png", png(7)[..20].to_vec());
    map.insert("junk.png", b"not an image".to_vec());
    map
}

/// One kind of damage to a record's JSON text.
#[derive(Debug, Clone)]
enum Damage {
    /// Cut the line to this many bytes.
    Cut(usize),
    /// Exchange two fields' values.
    Swap(usize, usize),
    /// Give a field a value of another type.
    Retype(usize, u8),
    /// Remove a field.
    Drop(usize),
    /// Point the image at a broken file, a missing one, or out of the folder.
    Image(u8),
    /// Reuse another record's id.
    Duplicate,
    /// Replace a byte with one that is not UTF-8.
    NotUtf8(usize),
}

const FIELDS: [&str; 6] = ["id", "image", "question", "chosen", "rejected", "idx"];

fn damage(i: usize, d: &Damage) -> Vec<u8> {
    let mut v = good(i);
    let obj = v.as_object_mut().unwrap();
    match d {
        Damage::Cut(n) => {
            let text = v.to_string().into_bytes();
            return text[..(*n % text.len())].to_vec();
        }
        Damage::Swap(a, b) => {
            let (a, b) = (FIELDS[a % 6], FIELDS[b % 6]);
            let (va, vb) = (obj[a].clone(), obj[b].clone());
            obj.insert(a.into(), vb);
            obj.insert(b.into(), va);
        }
        Damage::Retype(f, t) => {
            let value = match t % 6 {
                0 => Value::Null,
                1 => json!(3.5),
                2 => json!([1, "a"]),
                3 => json!({"x": 1}),
                4 => json!(true),
                _ => json!(""),
            };
            obj.insert(FIELDS[f % 6].into(), value);
        }
        Damage::Drop(f) => {
            obj.remove(FIELDS[f % 6]);
        }
        Damage::Image(k) => {
            let name = ["cut.png", "junk.png", "absent.png", "../img0.png"][*k as usize % 4];
            obj.insert("image".into(), json!(name));
        }
        Damage::Duplicate => {
            obj.insert("id".into(), json!("r0"));
        }
        Damage::NotUtf8(at) => {
            let mut text = v.to_string().into_bytes();
            let at = at % text.len();
            text[at] = 0xff;
            return text;
        }
    }
    v.to_string().into_bytes()
}

fn damages() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (0usize..200).prop_map(Damage::Cut),
        (0usize..6, 0usize..6).prop_map(|(a, b)| Damage::Swap(a, b)),
        (0usize..6, any::<u8>()).prop_map(|(f, t)| Damage::Retype(f, t)),
        (0usize..6).prop_map(Damage::Drop),
        any::<u8>().prop_map(Damage::Image),
        Just(Damage::Duplicate),
        (0usize..200).prop_map(Damage::NotUtf8),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_record_is_either_read_or_reported(plan in proptest::collection::vec(proptest::option::of(damages()), 1..12)) {
        // Record 0 is always good, so that Duplicate has an id to repeat.
        let mut lines = vec![good(0).to_string().into_bytes()];
        for (i, d) in plan.iter().enumerate() {
            lines.push(match d {
                Some(d) => damage(i + 1, d),
                None => good(i + 1).to_string().into_bytes(),
            });
        }
        let mut file = Vec::new();
        let mut nonblank = 0;
        for l in &lines {
            file.extend_from_slice(l);
            file.push(b'\n');
            nonblank += usize::from(!l.iter().all(u8::is_ascii_whitespace));
        }
        let records = read_bytes("d.jsonl", file, images(), ReadOptions::default()).unwrap();
        let (pairs, summary) = records.read_all().unwrap();
        prop_assert_eq!(pairs.len() + summary.skipped_total(), nonblank);
        prop_assert_eq!(summary.errors.len(), summary.skipped_total());
        for record in summary.skipped_records() {
            prop_assert!(record.line.is_some_and(|l| l >= 1 && l <= lines.len()), "{:?}", record);
        }
        // Untouched records are read exactly as they are alone.
        for (i, d) in plan.iter().enumerate() {
            if d.is_some() {
                continue;
            }
            let id = format!("r{}", i + 1);
            let alone = read_bytes("d.jsonl", good(i + 1).to_string(), images(), ReadOptions::default())
                .unwrap()
                .read_all()
                .unwrap()
                .0;
            let got = pairs.iter().find(|p| p.id == id);
            prop_assert!(got.is_some(), "good record {} was lost", id);
            let (got, alone) = (got.unwrap(), &alone[0]);
            prop_assert_eq!(&got.question, &alone.question);
            prop_assert_eq!(&got.chosen, &alone.chosen);
            prop_assert_eq!(&got.rejected, &alone.rejected);
            prop_assert_eq!(&got.image.bytes, &alone.image.bytes);
            prop_assert_eq!(got.source.idx, alone.source.idx);
        }
    }
}
