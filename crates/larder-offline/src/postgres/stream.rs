//! Query results as a stream of Arrow batches: a binary `COPY (query) TO STDOUT`, decoded
//! row by row into column builders and cut into batches, on a task of its own that stays
//! at most two batches ahead of the reader.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::RecordBatch;
use arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::error::DataFusionError;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use deadpool_postgres::Object;
use futures::StreamExt;
use tokio_postgres::binary_copy::BinaryCopyOutStream;

use super::types::{ColumnType, Decoder};
use super::{PostgresOfflineStore, describe};
use crate::error::OfflineError;

/// What to run and how to hand the rows over.
pub(crate) struct CopyOut {
    pub sql: String,
    /// Fields declared non-null (the query guarantees it), by position.
    pub non_null: usize,
    /// Counts the rows streamed.
    pub rows: Option<Arc<AtomicU64>>,
    /// Run once every row has been read (drops temporary tables).
    pub cleanup: Option<String>,
}

/// Runs `query.sql` on `client` and streams its rows. Errors of planning (the query does
/// not plan, a column has a type Larder does not read) are returned here; errors while it
/// runs end the stream. Dropping the stream cancels the query.
pub(crate) async fn copy_out(
    store: &PostgresOfflineStore,
    client: Object,
    query: CopyOut,
    error: impl Fn(&tokio_postgres::Error) -> OfflineError,
) -> Result<SendableRecordBatchStream, OfflineError> {
    let statement = client.prepare(&query.sql).await.map_err(|e| error(&e))?;
    let mut fields = Vec::with_capacity(statement.columns().len());
    let mut types = Vec::with_capacity(statement.columns().len());
    let mut decoders = Vec::with_capacity(statement.columns().len());
    for (i, column) in statement.columns().iter().enumerate() {
        let Some(ty) = ColumnType::of(column.type_()) else {
            return Err(OfflineError::Backend {
                store: super::STORE,
                target: store.config.target(),
                message: format!(
                    "result column `{}` has type {}, which Larder cannot read",
                    column.name(),
                    column.type_()
                ),
            });
        };
        fields.push(Field::new(column.name(), ty.arrow(), i >= query.non_null));
        types.push(column.type_().clone());
        decoders.push(Decoder::new(ty));
    }
    let schema: SchemaRef = Arc::new(Schema::new(fields));
    let copy_sql = format!("COPY ({}) TO STDOUT (FORMAT binary)", query.sql);

    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<RecordBatch, DataFusionError>>(2);
    let batch_size = store.config.batch_size.max(1);
    let target = store.config.target();
    let task_schema = schema.clone();
    let (cancel, tls) = (client.cancel_token(), store.tls.clone());
    tokio::spawn(async move {
        let failed = |message: String| {
            DataFusionError::External(Box::new(OfflineError::Backend {
                store: super::STORE,
                target: target.clone(),
                message,
            }))
        };
        // Postgres announces a COPY with the first rows, so this waits for the query's
        // first 8 KiB of output (after any sort): a reader gone meanwhile cancels it.
        let copy = tokio::select! {
            copy = client.copy_out(&copy_sql) => Some(copy),
            () = sender.closed() => None,
        };
        let rows = match copy {
            Some(Ok(copy)) => BinaryCopyOutStream::new(copy, &types),
            Some(Err(e)) => {
                let _ = sender.send(Err(failed(describe(&e)))).await;
                drop(Object::take(client));
                return;
            }
            None => {
                tls.cancel(cancel).await;
                drop(Object::take(client));
                return;
            }
        };
        futures::pin_mut!(rows);
        let mut buffered = 0usize;
        let mut finished = false;
        loop {
            let next = tokio::select! {
                next = rows.next() => next,
                // The reader is gone before the next row came (a long sort in Postgres):
                // stop the query and close the connection rather than wait for the rest.
                () = sender.closed() => {
                    tls.cancel(cancel).await;
                    drop(Object::take(client));
                    return;
                }
            };
            let row = match next {
                Some(Ok(row)) => Some(row),
                Some(Err(e)) => {
                    let _ = sender.send(Err(failed(describe(&e)))).await;
                    // The connection is in an unknown state: close it.
                    drop(Object::take(client));
                    return;
                }
                None => {
                    finished = true;
                    None
                }
            };
            if let Some(row) = row {
                for (i, decoder) in decoders.iter_mut().enumerate() {
                    if let Err(e) = decoder.push(&row, i) {
                        let name = task_schema.field(i).name().clone();
                        let _ = sender
                            .send(Err(failed(format!("cannot read column `{name}`: {e}"))))
                            .await;
                        drop(Object::take(client));
                        return;
                    }
                }
                buffered += 1;
            }
            if buffered > 0 && (buffered == batch_size || finished) {
                let columns = decoders.iter_mut().map(Decoder::finish).collect();
                let batch = RecordBatch::try_new(task_schema.clone(), columns)
                    .map_err(|e| failed(format!("cannot assemble a batch: {e}")));
                if let Some(counter) = &query.rows {
                    counter.fetch_add(buffered as u64, Ordering::Relaxed);
                }
                buffered = 0;
                if sender.send(batch).await.is_err() {
                    // The reader is gone, maybe mid-COPY: the connection must not go back
                    // to the pool in that state.
                    tls.cancel(cancel).await;
                    drop(Object::take(client));
                    return;
                }
            }
            if finished {
                break;
            }
        }
        if let Some(cleanup) = &query.cleanup
            && let Err(e) = client.batch_execute(cleanup).await
        {
            tracing::warn!(error = %describe(&e), "cleanup after a postgres read failed");
        }
    });
    let batches = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    });
    Ok(Box::pin(RecordBatchStreamAdapter::new(schema, batches)))
}
