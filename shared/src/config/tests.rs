use std::collections::BTreeMap;
use std::path::PathBuf;

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Colour {
    Red,
    DeepBlue,
}

#[derive(Debug, Default, Deserialize)]
struct Root {
    name: Field<String>,
    count: Field<u32>,
    ratio: Field<f64>,
    on: Field<bool>,
    path: Field<PathBuf>,
    words: Field<Vec<String>>,
    colour: Field<Colour>,
    by_colour: Field<BTreeMap<Colour, u64>>,
    inner: Section<Inner>,
}

#[derive(Debug, Default, Deserialize)]
struct Inner {
    depth_secs: Field<u64>,
    label: Field<String>,
}

/// Reads `text` the way a validation pass would, every setting in declaration order.
fn lines(text: &str) -> Vec<String> {
    let mut r = Report::default();
    let (root, unknown) = r.open("", Section::<Root>::read(parse(text).unwrap()));
    let (inner, inner_unknown) = r.open("inner", root.inner);
    let _ = r.required("name", root.name);
    let _ = r.optional("count", root.count);
    let _ = r.optional("ratio", root.ratio);
    let _ = r.optional("on", root.on);
    let _ = r.optional("path", root.path);
    let _ = r.optional("words", root.words);
    let _ = r.optional("colour", root.colour);
    let _ = r.optional("by_colour", root.by_colour);
    r.finish(unknown);
    let _ = r.or("inner.depth_secs", inner.depth_secs, 5);
    let _ = r.optional("inner.label", inner.label);
    r.finish(inner_unknown);
    r.into_problems().iter().map(ToString::to_string).collect()
}

#[test]
fn a_good_file_reads_into_its_structs() {
    let text = r#"
name = "n"
count = 7
ratio = 2
on = true
path = "/p"
words = ["a", "b"]
colour = "deep-blue"
by_colour = { red = 1 }
[inner]
label = "x"
"#;
    assert_eq!(lines(text), Vec::<String>::new());
    let root = Section::<Root>::read(parse(text).unwrap()).settings;
    assert_eq!(root.name, Field::Present("n".to_string()));
    assert_eq!(root.count, Field::Present(7));
    assert_eq!(root.ratio, Field::Present(2.0));
    assert_eq!(root.colour, Field::Present(Colour::DeepBlue));
    assert_eq!(
        root.by_colour,
        Field::Present([(Colour::Red, 1)].into_iter().collect())
    );
    assert_eq!(root.inner.settings.label, Field::Present("x".to_string()));
    // Absent settings and sections read as absent, without #[serde(default)].
    assert_eq!(root.inner.settings.depth_secs, Field::Absent);
    let empty = Section::<Root>::read(parse("").unwrap()).settings;
    assert_eq!(empty.count, Field::Absent);
    assert_eq!(empty.inner.settings.label, Field::Absent);
}

#[test]
fn every_problem_is_listed_with_its_dotted_key() {
    let text = r#"
nmae = "typo"
count = -1
ratio = "high"
on = 1
path = 3
words = ["a", 2, "c", false]
colour = "green"
by_colour = { red = "one", blue = 2 }
zzz = 1
[inner]
depth_secs = 1.5
lable = "x"
"#;
    assert_eq!(
        lines(text),
        [
            "name: is required",
            "count: -1 is negative",
            "ratio: must be a number, not a string",
            "on: must be true or false, not an integer",
            "path: must be a string, not an integer",
            "words[1]: must be a string, not an integer",
            "words[3]: must be a string, not a boolean",
            "colour: \"green\" is not one of red, deep-blue",
            "by_colour.blue: is not one of red, deep-blue",
            "by_colour.red: must be a whole number, not a string",
            "nmae: unknown setting (did you mean name?)",
            "zzz: unknown setting; known here: name, count, ratio, on, path, words, colour, by_colour, inner",
            "inner.depth_secs: must be a whole number, not a float",
            "inner.lable: unknown setting (did you mean label?)",
        ]
    );
}

#[test]
fn whole_values_of_the_wrong_kind_say_what_was_expected() {
    let text = r#"
name = ["n"]
count = 5000000000
words = "a b"
colour = 1
by_colour = 3
inner = 4
"#;
    assert_eq!(
        lines(text),
        [
            "inner: must be a section ([inner]), not an integer",
            "name: must be a string, not an array",
            "count: 5000000000 is too large (at most 4294967295)",
            "words: must be an array of strings, not a string",
            "colour: must be one of red, deep-blue, not an integer",
            "by_colour: must be a table of whole numbers, not an integer",
        ]
    );
}

#[test]
fn the_probe_reads_what_a_type_asks_for() {
    assert_eq!(shape_of::<String>(), Shape::String);
    assert_eq!(shape_of::<PathBuf>(), Shape::String);
    assert_eq!(shape_of::<u8>(), Shape::Integer { min: 0, max: 255 });
    assert_eq!(
        shape_of::<u128>(),
        Shape::Integer {
            min: 0,
            max: i64::MAX
        }
    );
    assert_eq!(shape_of::<Colour>(), Shape::OneOf(&["red", "deep-blue"]));
    assert_eq!(
        shape_of::<Vec<Colour>>(),
        Shape::Array(Box::new(Shape::OneOf(&["red", "deep-blue"])))
    );
    assert_eq!(
        shape_of::<BTreeMap<String, Vec<u64>>>(),
        Shape::Table(
            Box::new(Shape::String),
            Box::new(Shape::Array(Box::new(Shape::Integer {
                min: 0,
                max: i64::MAX
            })))
        )
    );
    assert_eq!(shape_of::<Inner>(), Shape::Struct(&["depth_secs", "label"]));
    assert_eq!(shape_of::<Option<bool>>(), Shape::Bool);
    assert_eq!(shape_of::<Value>(), Shape::Any);
}

#[test]
fn a_syntax_error_names_its_line_and_column() {
    let p = parse("a = 1\n[b\nc = 2\n").unwrap_err();
    assert_eq!(p.key, None);
    assert!(
        p.message.starts_with("not valid TOML: line 2, column "),
        "{p}"
    );
}

#[test]
fn a_field_reads_any_value_on_its_own() {
    let wrong = Field::<String>::from_value(Value::Integer(3));
    assert_eq!(
        wrong,
        Field::Wrong(vec![Fault {
            at: String::new(),
            message: "must be a string, not an integer".into()
        }])
    );
    let mut r = Report::default();
    assert_eq!(r.optional("k", wrong), None);
    assert_eq!(r.or("d", Field::Absent, 9), Some(9));
    assert_eq!(r.required("q", Field::<u8>::Absent), None);
    assert_eq!(r.required("p", Field::Present(1)), Some(1));
    assert_eq!(
        r.problems(),
        [
            Problem::at("k", "must be a string, not an integer"),
            Problem::at("q", "is required")
        ]
    );
}

#[test]
fn problems_display_as_a_list() {
    let ps = Problems::from(vec![
        Problem::at("a.b", "is wrong"),
        Problem::file("f: gone"),
    ]);
    assert_eq!(
        ps.to_string(),
        "2 problems in the configuration:\n  a.b: is wrong\n  f: gone"
    );
    assert_eq!(ps.keys(), ["a.b"]);
}
