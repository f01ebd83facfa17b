//! Which executors a workflow may name in `uses`.

/// The executors `uses` may name, as the compiler sees them.
///
/// Implemented for the node's [`Executors`](crate::executor::Executors), and
/// for plain lists of names (arrays and vectors) where an entry ending in
/// `/*` (`model/*`) accepts any name with that prefix.
pub trait ExecutorCatalog {
    /// Whether `uses` names an executor.
    fn knows(&self, uses: &str) -> bool;
    /// Names to suggest from when it does not.
    fn names(&self) -> Vec<String>;
}

impl ExecutorCatalog for crate::executor::Executors {
    fn knows(&self, uses: &str) -> bool {
        crate::executor::Executors::knows(self, uses)
    }
    fn names(&self) -> Vec<String> {
        crate::executor::Executors::names(self)
            .map(str::to_string)
            .collect()
    }
}

fn list_knows<S: AsRef<str>>(list: &[S], uses: &str) -> bool {
    list.iter().any(|name| {
        let name = name.as_ref();
        match name.strip_suffix('*') {
            Some(prefix) if prefix.ends_with('/') => {
                uses.len() > prefix.len() && uses.starts_with(prefix)
            }
            _ => name == uses,
        }
    })
}

impl<S: AsRef<str>, const N: usize> ExecutorCatalog for [S; N] {
    fn knows(&self, uses: &str) -> bool {
        list_knows(self, uses)
    }
    fn names(&self) -> Vec<String> {
        self.iter().map(|s| s.as_ref().to_string()).collect()
    }
}

impl<S: AsRef<str>> ExecutorCatalog for Vec<S> {
    fn knows(&self, uses: &str) -> bool {
        list_knows(self, uses)
    }
    fn names(&self) -> Vec<String> {
        self.iter().map(|s| s.as_ref().to_string()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_match_exact_names_and_prefixes() {
        let list = ["exec", "model/*"];
        assert!(list.knows("exec"));
        assert!(list.knows("model/sentiment@production"));
        assert!(!list.knows("model/"));
        assert!(!list.knows("http"));
        assert_eq!(vec!["a".to_string()].names(), vec!["a"]);
    }
}
