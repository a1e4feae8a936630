//! Queries SQLite and PostgreSQL share word for word; each backend names its own
//! placeholders (`?1` or `$1`).

/// `UserStore::holdings` for SQLite and PostgreSQL, with placeholders for the user, `from`
/// and `to`.
pub(crate) fn holdings_read(user: &str, from: &str, to: &str) -> String {
    format!(
        "SELECT ts, data FROM holdings WHERE user_id = {user} AND ts <= {to}
           AND ts >= COALESCE(
             (SELECT MAX(ts) FROM holdings WHERE user_id = {user} AND ts <= {from}), {from})
         ORDER BY ts"
    )
}

/// `UserStore::holdings_at` for SQLite and PostgreSQL, with a placeholder for the time.
pub(crate) fn holdings_at(at: &str) -> String {
    format!(
        "SELECT h.user_id, h.ts, h.data FROM holdings h JOIN (
           SELECT user_id, MAX(ts) AS ts FROM holdings WHERE ts <= {at} GROUP BY user_id
         ) newest ON h.user_id = newest.user_id AND h.ts = newest.ts"
    )
}
