//! Bounded per-thread caches of what requests build again and again from the same names
//! (read schemas, a table's SQL).

/// The first entry of `kept` that `matches`, or a new one from `make`, kept at the end;
/// past `limit` entries the oldest is forgotten.
pub(crate) fn find_or_keep<T: Clone>(
    kept: &mut Vec<T>,
    limit: usize,
    matches: impl Fn(&T) -> bool,
    make: impl FnOnce() -> T,
) -> T {
    if let Some(found) = kept.iter().find(|entry| matches(entry)) {
        return found.clone();
    }
    let made = make();
    if kept.len() >= limit {
        kept.remove(0);
    }
    kept.push(made.clone());
    made
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_keeps_and_forgets_the_oldest() {
        let mut kept = Vec::new();
        let mut made = 0;
        let mut get = |kept: &mut Vec<u32>, n: u32| {
            find_or_keep(
                kept,
                2,
                |&k| k == n,
                || {
                    made += 1;
                    n
                },
            )
        };
        assert_eq!(get(&mut kept, 1), 1);
        assert_eq!(get(&mut kept, 1), 1);
        assert_eq!(get(&mut kept, 2), 2);
        assert_eq!(get(&mut kept, 3), 3);
        assert_eq!(kept, [2, 3]);
        assert_eq!(get(&mut kept, 1), 1);
        assert_eq!(made, 4, "1 twice, 2 and 3 once");
    }
}
