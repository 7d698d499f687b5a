//! Whatever a definition file contains, validation answers with definitions or errors,
//! never a panic.

use proptest::prelude::*;

use crate::definitions::{DEMO, parse};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
        let _ = parse(&[("f.yaml", &text)]);
    }

    #[test]
    fn mutated_demo_never_panics(cut in 0usize..DEMO.len(), junk in "[ :\\-\\[\\]{}*a-z0-9\\n]{0,12}") {
        let mut text = DEMO.to_string();
        let cut = (0..=cut).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
        text.insert_str(cut, &junk);
        if let Err(errors) = parse(&[("f.yaml", &text)]) {
            // Every error names the file.
            prop_assert!(errors.iter().all(|e| e.starts_with("f.yaml")), "{errors:?}");
        }
    }
}
