//! [`Retention`]: which committed versions keep their state.

/// Which versions keep their state once newer ones are committed.
///
/// Always kept: version 0, the head, and every tagged version. On top of those: the `keep_last` most recent
/// versions and every version that is a multiple of `keep_every`. The default keeps everything. A pruned
/// version keeps its history entry (parent, fingerprint, record); only its state is dropped, and asking for
/// it is [`Error::Pruned`](crate::Error::Pruned). Versions share unchanged variables, so keeping many costs
/// only what changed between them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    /// Keep the states of this many most recent versions (`None`: all).
    pub keep_last: Option<usize>,
    /// Also keep every version whose number is a multiple of this (`None` or `Some(0)`: none).
    pub keep_every: Option<u64>,
}

impl Retention {
    /// Keep every version (the default).
    pub fn keep_all() -> Self {
        Retention::default()
    }

    /// Keep the `n` most recent versions (plus version 0, the head and tagged versions).
    pub fn keep_last(n: usize) -> Self {
        Retention { keep_last: Some(n), keep_every: None }
    }

    /// Also keep every `k`-th version.
    pub fn and_every(mut self, k: u64) -> Self {
        self.keep_every = Some(k);
        self
    }

    /// Whether the policy keeps `version`, given the newest version number and whether it is pinned (version
    /// 0, head, tagged).
    pub(crate) fn keeps(&self, version: u64, newest: u64, pinned: bool) -> bool {
        if pinned || version == 0 {
            return true;
        }
        let recent = match self.keep_last {
            None => true,
            Some(n) => newest - version < n as u64,
        };
        let periodic = matches!(self.keep_every, Some(k) if k > 0 && version.is_multiple_of(k));
        recent || periodic
    }
}
