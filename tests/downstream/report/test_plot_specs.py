"""downstream.report.plot_specs: which plot is drawn from which table (the Snakefile names the PNGs from it)."""
from downstream.report.plot_specs import plot_names, specs_for


def test_plots_follow_the_tables():
    run = ["segmentation", "detection", "segmentation_per_product", "detection_per_product", "cost", "cost_per_job"]
    assert plot_names(run) == ["segmentation_methods", "detection_methods", "segmentation_heatmap", "cost"]
    assert plot_names(["generation.csv", *run, "study_tab29_tau", "study_tab29_tau_vs_paper"]) == [
        "segmentation_methods", "detection_methods", "segmentation_heatmap", "generation", "cost", "study_tab29_tau"]
    s = specs_for(["study_tab29_tau"])[0]
    assert (s.table, s.kind) == ("study_tab29_tau.csv", "study")
    assert specs_for(["segmentation"])[0].metrics == ("pixel_ap", "pixel_iou_best")
