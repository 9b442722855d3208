//! The order the boots start in: longest first, by the wall times of the last suite that ran
//! each (kept in `target/xtask-logs/durations`, one `RUN-ID MILLISECONDS` line per run), so that
//! the two workers finish close together instead of one waiting on a long boot started last.
//! A run with no recorded time starts before every timed one (it may be long); without the file,
//! the runs start in list order.

use std::collections::BTreeMap;

/// The recorded wall times, in milliseconds; lines that do not parse are ignored.
pub fn parse(text: &str) -> BTreeMap<String, u128> {
    text.lines()
        .filter_map(|line| {
            let (id, ms) = line.rsplit_once(' ')?;
            Some((id.to_owned(), ms.parse().ok()?))
        })
        .collect()
}

/// The file's text for `durations`.
pub fn render(durations: &BTreeMap<String, u128>) -> String {
    durations.iter().map(|(id, ms)| format!("{id} {ms}\n")).collect()
}

/// The indices of `ids` in the order the workers take them from the end of the queue: the
/// returned vector ends with the runs to start first.
pub fn queue(ids: &[&str], known: &BTreeMap<String, u128>) -> Vec<usize> {
    let mut order: Vec<usize> = (0..ids.len()).rev().collect();
    // Stable: unknown runs (None sorts above every time) keep list order among themselves.
    order.sort_by_key(|&i| known.get(ids[i]).map_or(u128::MAX, |&ms| ms));
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_runs_start_first_and_unknown_ones_before_them() {
        let known = parse("a 3000\nb 31000\nbroken line\nc 13000\n");
        assert_eq!(known.len(), 3);
        let ids = ["a", "b", "c", "new", "newer"];
        let mut queue = queue(&ids, &known);
        let mut started = Vec::new();
        while let Some(i) = queue.pop() {
            started.push(ids[i]);
        }
        assert_eq!(started, ["new", "newer", "b", "c", "a"]);
    }

    #[test]
    fn without_times_the_runs_start_in_list_order() {
        let ids = ["a", "b", "c"];
        let mut queue = queue(&ids, &BTreeMap::new());
        assert_eq!([queue.pop(), queue.pop(), queue.pop()], [Some(0), Some(1), Some(2)]);
    }

    #[test]
    fn render_and_parse_agree() {
        let known = parse("harness:broken-emulation 13900\naccept:eager 31600\n");
        assert_eq!(parse(&render(&known)), known);
    }
}
