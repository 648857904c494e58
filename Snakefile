# mapd's reproducibility benchmark. The workflow lives in workflow/ (Snakemake's standard
# layout); this file includes it so that `snakemake <target>` works from the repository root.
include: "workflow/Snakefile"


# Snakemake takes the default target from the main Snakefile only, so name it here: the report.
rule default:
    default_target: True
    input:
        rules.all.input,
