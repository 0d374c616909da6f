//! `ls`, `info`, `rm` and `set-expiry`: the user's own uploads, from the local list of
//! completed uploads (`uploads.json`, with their owner tokens) and the server's manage
//! endpoints. A file is named by its id, a unique prefix of it, or its manage link (which
//! carries the owner token, so it works for uploads made elsewhere, e.g. in the browser).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;

use crate::Context;
use crate::api::ManageInfo;
use crate::error::{Error, Result};
use crate::link;
use crate::store::UploadRecord;
use crate::util;

/// A file the user owns: where it is and the token that manages it.
#[derive(Debug)]
struct Owned {
    server: String,
    id: String,
    owner_token: String,
    secret: String,
    /// The local record, when the upload is in the list.
    record: Option<UploadRecord>,
}

/// Finds the file `target` names.
fn resolve(ctx: &Context, target: &str) -> Result<Owned> {
    let uploads = ctx.store.uploads()?.uploads;
    if target.contains("://") {
        let parsed = link::parse(target)?;
        let record = uploads
            .iter()
            .find(|u| u.id == parsed.id && u.server == parsed.server)
            .cloned();
        let owner_token = match (&parsed.owner_token, &record) {
            (Some(owner), _) => owner.clone(),
            (None, Some(record)) => record.owner_token.clone(),
            (None, None) => {
                return Err(Error::Usage(
                    "that share link is not one of your uploads; give its manage link".into(),
                ));
            }
        };
        return Ok(Owned {
            server: parsed.server,
            id: parsed.id,
            owner_token,
            secret: parsed.secret.to_base64url(),
            record,
        });
    }
    let matches: Vec<&UploadRecord> = uploads
        .iter()
        .filter(|u| u.id.starts_with(target))
        .collect();
    match matches.as_slice() {
        [one] if !target.is_empty() => Ok(Owned {
            server: one.server.clone(),
            id: one.id.clone(),
            owner_token: one.owner_token.clone(),
            secret: one.secret.clone(),
            record: Some((*one).clone()),
        }),
        [] | [_] => Err(Error::Usage(format!(
            "no upload {target:?} in your list (see `bitstratus ls`); a manage link works too"
        ))),
        _ => Err(Error::Usage(format!(
            "{target:?} matches several uploads; give more of the id"
        ))),
    }
}

/// Prints a value as one line of JSON.
fn print_json(value: &impl Serialize) -> Result<()> {
    let line = serde_json::to_string(value)
        .map_err(|e| Error::Internal(format!("could not encode the output: {e}")))?;
    println!("{line}");
    Ok(())
}

/// One upload as `ls --json` prints it.
#[derive(Debug, Serialize)]
struct Listed<'a> {
    id: &'a str,
    server: &'a str,
    name: &'a str,
    size: u64,
    created_at: i64,
    expires_at: i64,
    download_limit: Option<u64>,
    password: bool,
    share_link: String,
    manage_link: String,
}

/// `ls`: the local list, newest last.
pub(crate) fn ls(ctx: &Context) -> Result<()> {
    let uploads = ctx.store.uploads()?.uploads;
    if ctx.json {
        let listed: Vec<Listed<'_>> = uploads
            .iter()
            .map(|u| Listed {
                id: &u.id,
                server: &u.server,
                name: &u.name,
                size: u.size,
                created_at: u.created_at,
                expires_at: u.expires_at,
                download_limit: u.download_limit,
                password: u.password,
                share_link: u.share_link(),
                manage_link: u.manage_link(),
            })
            .collect();
        return print_json(&listed);
    }
    if uploads.is_empty() {
        if !ctx.quiet {
            eprintln!("No uploads yet.");
        }
        return Ok(());
    }
    let now = util::now();
    println!("{:<22}  {:>10}  {:<22}  NAME", "ID", "SIZE", "EXPIRES");
    for u in &uploads {
        let expires = if u.expires_at <= now {
            "expired".to_owned()
        } else {
            util::format_time(u.expires_at)
        };
        println!(
            "{:<22}  {:>10}  {:<22}  {}",
            u.id,
            util::format_bytes(u.size),
            expires,
            u.name
        );
    }
    Ok(())
}

/// `info` output.
#[derive(Debug, Serialize)]
struct Info {
    id: String,
    server: String,
    name: Option<String>,
    state: String,
    size: Option<u64>,
    created_at: i64,
    expires_at: i64,
    download_limit: Option<u64>,
    download_count: u64,
    downloads_remaining: Option<u64>,
    password: bool,
    share_link: String,
}

/// The file's name and size from the sealed metadata, when it can be opened without a password.
fn open_name(owned: &Owned, manage: &ManageInfo) -> Option<crypto_wasm::Metadata> {
    if manage.kdf.is_some() {
        return None;
    }
    let secret = crypto_wasm::Secret::from_base64url(&owned.secret).ok()?;
    let keys = crypto_wasm::FileKeys::derive(&secret, None).ok()?;
    let blob = URL_SAFE_NO_PAD.decode(&manage.metadata).ok()?;
    keys.open_metadata(&blob).ok()
}

/// `info`: the server's current view of one upload.
pub(crate) async fn info(ctx: &Context, target: &str) -> Result<()> {
    let owned = resolve(ctx, target)?;
    let api = ctx.api(&owned.server)?;
    let manage = api.manage(&owned.id, &owned.owner_token).await?;
    let opened = open_name(&owned, &manage);
    let info = Info {
        id: owned.id.clone(),
        server: owned.server.clone(),
        name: opened
            .as_ref()
            .map(|m| m.name.clone())
            .or_else(|| owned.record.as_ref().map(|r| r.name.clone())),
        state: manage.state.clone(),
        size: opened
            .as_ref()
            .map(|m| m.size)
            .or_else(|| owned.record.as_ref().map(|r| r.size)),
        created_at: manage.created_at,
        expires_at: manage.expires_at,
        download_limit: manage.download_limit,
        download_count: manage.download_count,
        downloads_remaining: manage
            .download_limit
            .map(|limit| limit.saturating_sub(manage.download_count)),
        password: manage.kdf.is_some(),
        share_link: link::share(&owned.server, &owned.id, &owned.secret),
    };
    if let Some(mut record) = owned.record {
        record.expires_at = manage.expires_at;
        record.download_limit = manage.download_limit;
        ctx.store.add_upload(record)?;
    }
    if ctx.json {
        return print_json(&info);
    }
    println!("id:         {}", info.id);
    println!("name:       {}", info.name.as_deref().unwrap_or("(sealed)"));
    match info.size {
        Some(size) => println!("size:       {}", util::format_bytes(size)),
        None => println!("size:       {} encrypted", util::format_bytes(manage.size)),
    }
    println!("state:      {}", info.state);
    println!("created:    {}", util::format_time(info.created_at));
    println!("expires:    {}", util::format_time(info.expires_at));
    match info.download_limit {
        Some(limit) => println!(
            "downloads:  {} of {limit} ({} left)",
            info.download_count,
            info.downloads_remaining.unwrap_or(0)
        ),
        None => println!("downloads:  {} (no limit)", info.download_count),
    }
    println!("password:   {}", if info.password { "yes" } else { "no" });
    println!("share link: {}", info.share_link);
    Ok(())
}

/// `rm`: deletes uploads on the server and from the list.
pub(crate) async fn rm(ctx: &Context, targets: &[String]) -> Result<()> {
    for target in targets {
        let owned = resolve(ctx, target)?;
        let api = ctx.api(&owned.server)?;
        let gone_already = match api.delete(&owned.id, &owned.owner_token).await {
            Ok(()) => false,
            Err(Error::NotFound) => true,
            Err(e) => return Err(e),
        };
        ctx.store.update_uploads(|uploads| {
            uploads
                .uploads
                .retain(|u| !(u.id == owned.id && u.server == owned.server));
        })?;
        if ctx.json {
            #[derive(Serialize)]
            struct Removed<'a> {
                id: &'a str,
                deleted: bool,
            }
            print_json(&Removed {
                id: &owned.id,
                deleted: !gone_already,
            })?;
        } else if !ctx.quiet {
            if gone_already {
                eprintln!(
                    "{} was already gone on the server (expired or deleted); removed from the list.",
                    owned.id
                );
            } else {
                eprintln!("Deleted {}.", owned.id);
            }
        }
    }
    Ok(())
}

/// `set-expiry`: a new lifetime, counted from now.
pub(crate) async fn set_expiry(ctx: &Context, target: &str, expires_in: u64) -> Result<()> {
    let owned = resolve(ctx, target)?;
    let api = ctx.api(&owned.server)?;
    let manage = api
        .set_expiry(&owned.id, &owned.owner_token, expires_in)
        .await?;
    if let Some(mut record) = owned.record {
        record.expires_at = manage.expires_at;
        ctx.store.add_upload(record)?;
    }
    if ctx.json {
        #[derive(Serialize)]
        struct Expiry<'a> {
            id: &'a str,
            expires_at: i64,
        }
        print_json(&Expiry {
            id: &owned.id,
            expires_at: manage.expires_at,
        })
    } else {
        if !ctx.quiet {
            println!(
                "{} now expires {}.",
                owned.id,
                util::format_time(manage.expires_at)
            );
        }
        Ok(())
    }
}
