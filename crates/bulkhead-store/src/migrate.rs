//! Versioned schema migrations for SQLite databases.
//!
//! Each database records its schema version in `PRAGMA user_version`.
//! Opening applies the missing migrations in order, each in its own
//! transaction together with the version bump, so a crash leaves the
//! database at a whole version. A database newer than this binary is
//! refused rather than touched.

use rusqlite::Connection;

use crate::StoreError;

/// Applies `migrations[v..]` where `v` is the database's current version.
pub fn apply(conn: &mut Connection, what: &str, migrations: &[&str]) -> Result<(), StoreError> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let known = migrations.len() as i64;
    if current > known {
        return Err(StoreError::Internal(format!(
            "the {what} database has schema version {current}, newer than this binary knows ({known}); upgrade bulkhead"
        )));
    }
    for (i, sql) in migrations.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        // PRAGMA takes no bound parameters; the value is our own integer.
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applies_once_and_refuses_newer_databases() {
        let mut conn = Connection::open_in_memory().unwrap();
        let m = ["CREATE TABLE a (x INTEGER)", "CREATE TABLE b (y INTEGER)"];
        apply(&mut conn, "test", &m[..1]).unwrap();
        apply(&mut conn, "test", &m).unwrap();
        apply(&mut conn, "test", &m).unwrap();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, 2);
        let err = apply(&mut conn, "test", &m[..1]).unwrap_err();
        assert!(err.to_string().contains("newer than this binary"), "{err}");
    }

    #[test]
    fn a_failing_migration_leaves_the_previous_version() {
        let mut conn = Connection::open_in_memory().unwrap();
        let m = [
            "CREATE TABLE a (x INTEGER)",
            "CREATE TABLE b (y INTEGER); SYNTAX ERROR",
        ];
        assert!(apply(&mut conn, "test", &m).is_err());
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, 1);
        let b: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'b'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(b, 0);
    }
}
