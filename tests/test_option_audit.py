"""Every option of every mmcli command has a test that would fail if the option were ignored.

``PROOFS`` maps each (command path, option) pair, options named by their long flag (``--normalize``
stands for ``--normalize/--no-normalize``), to the tests that prove it: each observes something only
that option produces (a changed output, a file it writes, a refusal it causes, a note it prints, what
reaches the model), not merely an exit status of 0. An entry may add a line beginning "NOTE:" for what
its tests leave unproven, and an option no test here can prove has "UNTESTABLE: <why>" instead; one that
is truly ignored has "BUG: <what>" beside an xfail(strict=True) test that shows it.

The tests below fail, naming the pair, when an option of the app has no entry, when an entry names a
test function that does not exist, or when the table names an option the app no longer has.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
PROOF = "tests/test_option_proofs.py::"
NO_GPU = (
    "NOTE: running on a CUDA or Apple MPS device needs that hardware, which the CI machines lack; the tests "
    "prove the flag reaches the model loader (--device cpu) and that an absent device is refused by name"
)

PROOFS: dict[tuple[str, str], tuple[str, ...]] = {
    ("", "--version"): (
        "tests/test_cli.py::test_version_and_module_entry_point",
        PROOF + "test_version_prints_the_version_and_nothing_else",
    ),
    # -- caption ---------------------------------------------------------------------------------------
    ("caption", "--output"): ("tests/test_caption.py::test_caption_tsv_to_file_needs_overwrite_to_replace",),
    ("caption", "--format"): (
        "tests/test_caption.py::test_caption_one_image_as_text",
        "tests/test_caption.py::test_caption_tsv_to_file_needs_overwrite_to_replace",
    ),
    ("caption", "--image-column"): (
        "tests/test_sources.py::test_caption_on_shards_and_parquet_gives_the_loose_files_captions",
    ),
    ("caption", "--text-column"): (
        "tests/test_sources.py::test_caption_on_shards_and_parquet_gives_the_loose_files_captions",
    ),
    ("caption", "--id-column"): (
        "tests/test_sources.py::test_caption_on_shards_and_parquet_gives_the_loose_files_captions",
    ),
    ("caption", "--model"): ("tests/test_caption.py::test_caption_folder_streams_jsonl_and_reports_corrupt_images",),
    ("caption", "--prompt"): (PROOF + "test_caption_prompt_conditions_the_captions",),
    ("caption", "--detail"): (
        "tests/test_caption.py::test_caption_usage_errors",
        "tests/test_caption.py::test_caption_with_a_chat_model_and_detail_levels",
    ),
    ("caption", "--max-new-tokens"): (PROOF + "test_caption_max_new_tokens_shortens_every_caption",),
    ("caption", "--min-new-tokens"): (
        PROOF + "test_caption_min_new_tokens_reaches_generate",
        "NOTE: the random tiny captioners never end a caption early, so the floor is observed in the "
        "arguments transformers' generate receives, not in a longer caption",
    ),
    ("caption", "--num-beams"): (PROOF + "test_caption_num_beams_changes_the_captions",),
    ("caption", "--repetition-penalty"): (PROOF + "test_caption_repetition_penalty_changes_the_captions",),
    ("caption", "--temperature"): (PROOF + "test_caption_temperature_samples_instead_of_greedy",),
    ("caption", "--top-p"): (PROOF + "test_caption_top_p_cuts_the_nucleus",),
    ("caption", "--seed"): (PROOF + "test_caption_seed_makes_sampling_reproducible",),
    ("caption", "--batch-size"): (PROOF + "test_batch_size_is_the_items_per_model_call",),
    ("caption", "--workers"): (PROOF + "test_workers_decode_in_threads_and_zero_in_the_calling_thread",),
    ("caption", "--device"): (PROOF + "test_device_reaches_the_loader_and_an_absent_gpu_is_refused", NO_GPU),
    ("caption", "--dtype"): (PROOF + "test_dtype_reaches_the_loader",),
    ("caption", "--quantize"): (
        PROOF + "test_quantize_makes_linear_layers_int8",
        "NOTE: for caption only the refusal of --quantize with --dtype bfloat16 is observed; int8 captions "
        "of the random tiny BLIP are not compared",
    ),
    ("caption", "--max-pixels"): (PROOF + "test_max_pixels_refuses_larger_images",),
    ("caption", "--exact-decode"): (PROOF + "test_exact_decode_turns_reduced_scale_decoding_off",),
    ("caption", "--on-error"): (PROOF + "test_on_error_fail_stops_at_the_bad_item",),
    ("caption", "--overwrite"): ("tests/test_caption.py::test_caption_tsv_to_file_needs_overwrite_to_replace",),
    ("classify", "--restart"): (
        "tests/test_output_layer.py::test_classify_restart_discards_an_interrupted_runs_progress",
    ),
    ("classify", "--update"): (
        "tests/test_output_layer.py::test_classify_update_equals_a_fresh_run_and_classifies_only_what_changed",
    ),
    ("classify", "--keep-missing"): (
        "tests/test_output_layer.py::test_classify_update_equals_a_fresh_run_and_classifies_only_what_changed",
    ),
    ("caption", "--restart"): (PROOF + "test_caption_restart_discards_an_interrupted_runs_progress",),
    ("caption", "--update"): (
        "tests/test_update.py::test_caption_update_equals_a_fresh_run_and_captions_only_what_changed",
        "tests/test_video_caption.py::test_caption_update_with_videos_equals_a_fresh_run",
    ),
    ("caption", "--keep-missing"): (PROOF + "test_caption_keep_missing_keeps_the_records_of_vanished_files",),
    ("caption", "--keyframes"): (
        "tests/test_video_caption.py::test_cli_video_errors_and_refusals",
        "tests/test_video_caption.py::test_video_native_captioner_captions_each_video_whole",
        "NOTE: keyframes are caption's default sampling, so the flag itself shows only in the refusals it "
        "causes (with --fps; with a model that takes each video whole)",
    ),
    ("caption", "--fps"): (PROOF + "test_caption_video_sampling_flags_pick_the_frames",),
    ("caption", "--frames"): (PROOF + "test_caption_video_sampling_flags_pick_the_frames",),
    ("caption", "--scene-threshold"): (PROOF + "test_caption_video_sampling_flags_pick_the_frames",),
    ("caption", "--start"): (
        PROOF + "test_caption_video_sampling_flags_pick_the_frames",
        "tests/test_video_caption.py::test_video_native_captioner_captions_each_video_whole",
    ),
    ("caption", "--end"): (PROOF + "test_caption_video_sampling_flags_pick_the_frames",),
    ("caption", "--summary"): (
        "tests/test_video_caption.py::test_cli_captions_videos_with_segments_equal_to_frame_captions",
    ),
    ("caption", "--speech"): ("tests/test_transcribe.py::test_caption_speech_adds_what_is_said_during_each_segment",),
    ("caption", "--speech-language"): ("tests/test_transcribe.py::test_caption_speech_language_reaches_whisper",),
    ("caption", "--trust-remote-code"): (PROOF + "test_trust_remote_code_reaches_the_config_loader",),
    ("caption", "--quiet"): (PROOF + "test_quiet_silences_the_summary",),
    # -- transcribe ------------------------------------------------------------------------------------
    ("transcribe", "--output"): (
        "tests/test_transcribe.py::test_a_killed_transcription_resumes_to_the_uninterrupted_output",
    ),
    ("transcribe", "--overwrite"): (
        "tests/test_transcribe.py::test_a_killed_transcription_resumes_to_the_uninterrupted_output",
    ),
    ("transcribe", "--restart"): (
        "tests/test_transcribe.py::test_a_killed_transcription_resumes_to_the_uninterrupted_output",
    ),
    ("transcribe", "--model"): (
        "tests/test_transcribe.py::test_segments_are_whispers_own_long_form_decoding_of_the_recording",
        "tests/test_cli.py::test_each_model_variable_the_readme_names_sets_its_commands_model",
    ),
    ("transcribe", "--language"): (
        "tests/test_transcribe.py::test_windows_of_several_recordings_share_batches",
        "tests/test_transcribe.py::test_an_unknown_language_is_a_usage_error",
    ),
    ("transcribe", "--task"): ("tests/test_transcribe.py::test_windows_of_several_recordings_share_batches",),
    ("transcribe", "--batch-size"): ("tests/test_transcribe.py::test_windows_of_several_recordings_share_batches",),
    ("transcribe", "--workers"): (
        "tests/test_transcribe.py::test_workers_preprocess_windows_in_threads_and_quantize_makes_int8",
    ),
    ("transcribe", "--quantize"): (
        "tests/test_transcribe.py::test_workers_preprocess_windows_in_threads_and_quantize_makes_int8",
        "NOTE: the int8 transcript of the random tiny Whisper is not compared with the float one",
    ),
    ("transcribe", "--device"): (PROOF + "test_device_reaches_the_loader_and_an_absent_gpu_is_refused", NO_GPU),
    ("transcribe", "--dtype"): (PROOF + "test_dtype_reaches_the_loader",),
    ("transcribe", "--on-error"): ("tests/test_transcribe.py::test_silent_and_broken_recordings_are_error_records",),
    ("transcribe", "--start"): ("tests/test_transcribe.py::test_a_videos_soundtrack_and_a_time_range",),
    ("transcribe", "--end"): ("tests/test_transcribe.py::test_a_videos_soundtrack_and_a_time_range",),
    ("transcribe", "--trust-remote-code"): (PROOF + "test_trust_remote_code_reaches_the_config_loader",),
    ("transcribe", "--quiet"): (PROOF + "test_quiet_silences_the_summary",),
    # -- classify --------------------------------------------------------------------------------------
    ("classify", "--labels"): (
        PROOF + "test_classify_labels_file_adds_its_lines",
        "tests/test_classify.py::test_classify_needs_labels_and_a_dual_tower_model",
    ),
    ("classify", "--labels-file"): (PROOF + "test_classify_labels_file_adds_its_lines",),
    ("classify", "--template"): (
        PROOF + "test_classify_template_changes_the_scores",
        "tests/test_classify.py::test_classify_needs_labels_and_a_dual_tower_model",
    ),
    ("classify", "--features"): ("tests/test_classify.py::test_classify_command_from_images_and_from_features_agree",),
    ("classify", "--top-k"): ("tests/test_classify.py::test_classify_command_from_images_and_from_features_agree",),
    ("classify", "--output"): (PROOF + "test_classify_output_and_overwrite",),
    ("classify", "--model"): ("tests/test_classify.py::test_classify_needs_labels_and_a_dual_tower_model",),
    ("classify", "--batch-size"): (PROOF + "test_batch_size_is_the_items_per_model_call",),
    ("classify", "--workers"): (PROOF + "test_workers_decode_in_threads_and_zero_in_the_calling_thread",),
    ("classify", "--device"): (PROOF + "test_device_reaches_the_loader_and_an_absent_gpu_is_refused", NO_GPU),
    ("classify", "--dtype"): (PROOF + "test_dtype_reaches_the_loader",),
    ("classify", "--quantize"): (PROOF + "test_quantize_makes_linear_layers_int8",),
    ("classify", "--max-pixels"): (PROOF + "test_max_pixels_refuses_larger_images",),
    ("classify", "--exact-decode"): (PROOF + "test_exact_decode_turns_reduced_scale_decoding_off",),
    ("classify", "--on-error"): (PROOF + "test_on_error_fail_stops_at_the_bad_item",),
    ("classify", "--overwrite"): (PROOF + "test_classify_output_and_overwrite",),
    ("classify", "--trust-remote-code"): (PROOF + "test_trust_remote_code_reaches_the_config_loader",),
    ("classify", "--quiet"): (
        PROOF + "test_quiet_silences_the_summary",
        PROOF + "test_classify_quiet_silences_the_summary",
    ),
    # -- extract-features ------------------------------------------------------------------------------
    ("extract-features", "--output"): ("tests/test_cli.py::test_extract_folder_writes_matching_pair",),
    ("extract-features", "--text"): ("tests/test_cli.py::test_texts_from_flags_files_and_jsonl",),
    ("extract-features", "--modality"): (
        "tests/test_cli.py::test_texts_from_flags_files_and_jsonl",
        "tests/test_cli.py::test_text_lines_from_stdin_with_float16_and_no_normalize",
        "tests/test_audio.py::test_modality_audio_embeds_a_videos_soundtrack_not_its_frames",
    ),
    ("extract-features", "--image-column"): (
        "tests/test_sources.py::test_parquet_image_columns_give_the_loose_files_rows",
        "tests/test_sources.py::test_parquet_refusals_name_the_flag_and_the_columns",
        "tests/test_sources.py::test_a_folder_reads_tables_only_when_the_column_is_named",
        "tests/test_sources.py::test_s3_inputs_give_the_local_rows",
    ),
    ("extract-features", "--text-column"): ("tests/test_sources.py::test_parquet_id_and_text_columns",),
    ("extract-features", "--id-column"): (
        "tests/test_sources.py::test_parquet_id_and_text_columns",
        "tests/test_sources.py::test_s3_inputs_give_the_local_rows",
    ),
    ("extract-features", "--field"): ("tests/test_cli.py::test_texts_from_flags_files_and_jsonl",),
    ("extract-features", "--model"): (
        "tests/test_cli.py::test_extract_folder_writes_matching_pair",
        "tests/test_cli.py::test_stdin_paths_and_jsonl_records",
    ),
    ("extract-features", "--batch-size"): (PROOF + "test_batch_size_is_the_items_per_model_call",),
    ("extract-features", "--workers"): (PROOF + "test_workers_decode_in_threads_and_zero_in_the_calling_thread",),
    ("extract-features", "--device"): (
        PROOF + "test_device_reaches_the_loader_and_an_absent_gpu_is_refused",
        NO_GPU,
    ),
    ("extract-features", "--dtype"): (PROOF + "test_dtype_reaches_the_loader", PROOF + "test_dtype_changes_the_rows"),
    ("extract-features", "--quantize"): ("tests/test_engine.py::test_cli_quantize_caption_and_refusal",),
    ("extract-features", "--normalize"): (
        "tests/test_cli.py::test_text_lines_from_stdin_with_float16_and_no_normalize",
    ),
    ("extract-features", "--output-dtype"): (
        "tests/test_cli.py::test_text_lines_from_stdin_with_float16_and_no_normalize",
    ),
    ("extract-features", "--max-pixels"): (PROOF + "test_max_pixels_refuses_larger_images",),
    ("extract-features", "--exact-decode"): (PROOF + "test_exact_decode_turns_reduced_scale_decoding_off",),
    ("extract-features", "--on-error"): ("tests/test_cli.py::test_on_error_fail_stops_and_writes_no_pair",),
    ("extract-features", "--overwrite"): ("tests/test_cli.py::test_existing_output_needs_overwrite",),
    ("extract-features", "--restart"): (
        "tests/test_resume.py::test_other_settings_are_refused_and_restart_starts_over",
    ),
    ("extract-features", "--update"): (
        "tests/test_update.py::test_update_after_add_delete_rename_modify_equals_a_fresh_run",
    ),
    ("extract-features", "--keep-missing"): (
        "tests/test_update.py::test_keep_missing_keeps_rows_of_vanished_files_at_the_end",
        "tests/test_video_extract.py::test_update_keeps_a_vanished_videos_rows_together_with_keep_missing",
    ),
    ("caption", "--backend"): (
        "tests/test_ray_backend.py::test_caption_on_ray_equals_local",
        "tests/test_ray_backend.py::test_an_unreachable_cluster_is_a_clear_error",
    ),
    ("caption", "--ray-address"): (
        "tests/test_ray_backend.py::test_caption_on_ray_equals_local",
        "tests/test_ray_backend.py::test_an_unreachable_cluster_is_a_clear_error",
    ),
    ("caption", "--num-workers"): ("tests/test_ray_backend.py::test_caption_on_ray_equals_local",),
    ("caption", "--gpus-per-worker"): (
        "tests/test_ray_backend.py::test_a_cluster_without_gpus_refuses_gpus_per_worker",
        "NOTE: running with GPUs needs a cluster that has them, which CI lacks; the test proves the request "
        "reaches the cluster's resources",
    ),
    ("extract-features", "--backend"): (
        "tests/test_ray_backend.py::test_extract_features_on_ray_equals_local_on_images_a_video_and_a_failure",
        "tests/test_ray_backend.py::test_without_an_address_a_ray_is_started_for_the_run",
        "tests/test_ray_backend.py::test_ray_settings_are_refused_where_they_cannot_apply",
    ),
    ("extract-features", "--ray-address"): (
        "tests/test_ray_backend.py::test_extract_features_on_ray_equals_local_on_images_a_video_and_a_failure",
        "tests/test_ray_backend.py::test_ray_settings_are_refused_where_they_cannot_apply",
    ),
    ("extract-features", "--num-workers"): (
        "tests/test_ray_backend.py::test_extract_features_on_ray_equals_local_on_images_a_video_and_a_failure",
        "tests/test_ray_backend.py::test_texts_and_frame_rows_on_ray_equal_local",
    ),
    ("extract-features", "--gpus-per-worker"): (
        "tests/test_ray_backend.py::test_a_cluster_without_gpus_refuses_gpus_per_worker",
        "NOTE: running with GPUs needs a cluster that has them, which CI lacks; the test proves the request "
        "reaches the cluster's resources",
    ),
    ("extract-features", "--shard-rows"): (
        "tests/test_sharded_sets.py::test_sharded_run_equals_the_single_file_run_part_by_part",
        "tests/test_sharded_sets.py::test_other_settings_are_refused_naming_the_setting",
    ),
    ("extract-features", "--pool"): (
        "tests/test_video_extract.py::test_pooled_row_is_the_mean_of_the_frame_rows",
        "tests/test_audio.py::test_clap_rows_match_the_reference_usage_and_pool_as_a_hand_computation",
    ),
    ("extract-features", "--compile"): (
        PROOF + "test_compile_on_runs_full_batches_through_the_compiled_tower",
        PROOF + "test_compile_auto_compiles_only_runs_large_enough",
        PROOF + "test_a_failing_compile_falls_back_to_eager_and_says_so",
        PROOF + "test_compiled_rows_equal_the_eager_rows",
    ),
    ("extract-features", "--window"): ("tests/test_audio.py::test_window_and_hop_cut_the_recording",),
    ("extract-features", "--hop"): ("tests/test_audio.py::test_window_and_hop_cut_the_recording",),
    ("extract-features", "--fps"): ("tests/test_video_extract.py::test_pooled_row_is_the_mean_of_the_frame_rows",),
    ("extract-features", "--frames"): ("tests/test_video_extract.py::test_frame_rows_only_with_sampling_modes",),
    ("extract-features", "--keyframes"): ("tests/test_video_extract.py::test_frame_rows_only_with_sampling_modes",),
    ("extract-features", "--scene-threshold"): (PROOF + "test_extract_scene_threshold_sets_the_cuts",),
    ("extract-features", "--start"): ("tests/test_video_extract.py::test_frame_rows_only_with_sampling_modes",),
    ("extract-features", "--end"): (PROOF + "test_extract_end_stops_the_sampling",),
    ("extract-features", "--trust-remote-code"): (
        "tests/test_safety.py::test_a_checkpoint_with_its_own_code_is_refused_without_trust_remote_code",
        PROOF + "test_trust_remote_code_reaches_the_config_loader",
    ),
    ("extract-features", "--quiet"): (
        PROOF + "test_quiet_silences_the_summary",
        PROOF + "test_extract_quiet_silences_the_summary",
    ),
    # -- fuse ------------------------------------------------------------------------------------------
    # -- dedup -----------------------------------------------------------------------------------------
    ("dedup", "--threshold"): (
        "tests/test_dedup.py::test_keep_policies_and_a_sharded_set_equal_to_its_one_file_twin",
        "tests/test_dedup.py::test_exact_copies_by_their_bytes",
    ),
    ("dedup", "--method"): (
        "tests/test_dedup.py::test_the_approximate_methods_recall_the_planted_pairs",
        "tests/test_dedup.py::test_output_file_and_refusals",
    ),
    ("dedup", "--keep"): ("tests/test_dedup.py::test_keep_policies_and_a_sharded_set_equal_to_its_one_file_twin",),
    ("dedup", "--exact"): ("tests/test_dedup.py::test_exact_copies_by_their_bytes",),
    ("dedup", "--neighbors"): ("tests/test_dedup.py::test_neighbors_and_clusters_reach_the_approximate_methods",),
    ("dedup", "--clusters"): ("tests/test_dedup.py::test_neighbors_and_clusters_reach_the_approximate_methods",),
    ("dedup", "--seed"): ("tests/test_dedup.py::test_neighbors_and_clusters_reach_the_approximate_methods",),
    ("dedup", "--output"): ("tests/test_dedup.py::test_output_file_and_refusals",),
    ("dedup", "--overwrite"): ("tests/test_dedup.py::test_output_file_and_refusals",),
    ("dedup", "--quiet"): ("tests/test_dedup.py::test_output_file_and_refusals",),
    # -- score and select --------------------------------------------------------------------------------
    ("score", "--texts"): ("tests/test_select_score.py::test_pair_scores_are_the_cosine_of_each_id_s_rows",),
    ("score", "--head"): (
        "tests/test_select_score.py::test_the_aesthetic_predictor_s_forward_pass_from_its_state_dict",
        "tests/test_select_score.py::test_a_safetensors_linear_stack_with_relu",
    ),
    ("score", "--activation"): ("tests/test_select_score.py::test_a_safetensors_linear_stack_with_relu",),
    ("score", "--normalize"): (
        "tests/test_select_score.py::test_the_aesthetic_predictor_s_forward_pass_from_its_state_dict",
    ),
    ("score", "--output"): (
        "tests/test_select_score.py::test_select_writes_a_valid_set_whose_search_is_the_full_set_s_restricted",
    ),
    ("score", "--overwrite"): (
        "tests/test_select_score.py::test_score_and_select_refuse_an_existing_output_without_overwrite",
    ),
    ("score", "--quiet"): (
        "tests/test_select_score.py::test_score_and_select_refuse_an_existing_output_without_overwrite",
    ),
    ("select", "--output"): (
        "tests/test_select_score.py::test_select_writes_a_valid_set_whose_search_is_the_full_set_s_restricted",
    ),
    ("select", "--ids"): (
        "tests/test_select_score.py::test_select_writes_a_valid_set_whose_search_is_the_full_set_s_restricted",
    ),
    ("select", "--join"): (
        "tests/test_select_score.py::test_select_writes_a_valid_set_whose_search_is_the_full_set_s_restricted",
        "tests/test_select_score.py::test_dedup_then_select_keeps_one_row_of_each_group",
    ),
    ("select", "--where"): (
        "tests/test_select_score.py::test_select_writes_a_valid_set_whose_search_is_the_full_set_s_restricted",
        "tests/test_select_score.py::test_bad_input_is_one_line_and_nothing_is_written",
    ),
    ("select", "--fraction"): (
        "tests/test_select_score.py::test_select_writes_a_valid_set_whose_search_is_the_full_set_s_restricted",
    ),
    ("select", "--by"): (
        "tests/test_select_score.py::test_select_writes_a_valid_set_whose_search_is_the_full_set_s_restricted",
    ),
    ("select", "--media-shards"): (
        "tests/test_select_score.py::test_media_shards_read_back_to_the_same_bytes_and_records",
    ),
    ("select", "--shard-samples"): (
        "tests/test_select_score.py::test_media_shards_read_back_to_the_same_bytes_and_records",
    ),
    ("select", "--shard-rows"): (
        "tests/test_select_score.py::test_select_into_a_sharded_set_equals_the_one_file_set_and_resumes",
    ),
    ("select", "--overwrite"): (
        "tests/test_select_score.py::test_score_and_select_refuse_an_existing_output_without_overwrite",
    ),
    ("select", "--quiet"): (
        "tests/test_select_score.py::test_score_and_select_refuse_an_existing_output_without_overwrite",
    ),
    ("fuse", "--method"): (
        "tests/test_fusion_early.py::test_cli_fuses_and_reuses_a_projection",
        "tests/test_fuse_cli.py::test_late_fusion_of_retrieve_output_files",
    ),
    ("fuse", "--output"): (
        "tests/test_fuse_cli.py::test_attention_head_learns_xor_and_reloads_identically",
        PROOF + "test_fuse_results_output_file",
    ),
    ("fuse", "--align"): (PROOF + "test_fuse_align_row_pairs_rows_by_position",),
    ("fuse", "--strict"): (PROOF + "test_fuse_strict_refuses_ids_missing_from_an_input",),
    ("fuse", "--weights"): (
        PROOF + "test_fuse_weights_weigh_the_inputs",
        PROOF + "test_fuse_weights_weigh_result_lists",
    ),
    ("fuse", "--normalize"): (PROOF + "test_fuse_no_normalize_keeps_raw_scale",),
    ("fuse", "--project"): ("tests/test_fusion_early.py::test_cli_fuses_and_reuses_a_projection",),
    ("fuse", "--save-projection"): ("tests/test_fusion_early.py::test_cli_fuses_and_reuses_a_projection",),
    ("fuse", "--projection"): ("tests/test_fusion_early.py::test_cli_fuses_and_reuses_a_projection",),
    ("fuse", "--truth"): ("tests/test_fuse_cli.py::test_attention_head_learns_xor_and_reloads_identically",),
    ("fuse", "--head"): ("tests/test_fuse_cli.py::test_attention_head_learns_xor_and_reloads_identically",),
    ("fuse", "--save-head"): ("tests/test_fuse_cli.py::test_attention_head_learns_xor_and_reloads_identically",),
    ("fuse", "--predict"): ("tests/test_fuse_cli.py::test_attention_head_learns_xor_and_reloads_identically",),
    ("fuse", "--epochs"): (PROOF + "test_fuse_epochs_is_the_most_training_epochs",),
    ("fuse", "--lr"): (PROOF + "test_fuse_lr_sets_the_step",),
    ("fuse", "--hidden"): (PROOF + "test_fuse_hidden_is_the_width_of_the_fused_rows",),
    ("fuse", "--train-batch-size"): (PROOF + "test_fuse_batch_size_changes_the_training",),
    ("fuse", "--val-fraction"): (PROOF + "test_fuse_val_fraction_zero_trains_without_validation",),
    ("fuse", "--patience"): (PROOF + "test_fuse_patience_stops_training_early",),
    ("fuse", "--seed"): (PROOF + "test_fuse_seed_makes_training_reproducible",),
    ("fuse", "--results"): ("tests/test_fuse_cli.py::test_late_fusion_of_retrieve_output_files",),
    ("fuse", "--rrf-k"): (PROOF + "test_fuse_rrf_k_is_the_rrf_constant",),
    ("fuse", "--top-k"): (PROOF + "test_fuse_top_k_keeps_the_best_fused_hits",),
    ("fuse", "--output-dtype"): (PROOF + "test_fuse_storage_float16",),
    ("fuse", "--overwrite"): (PROOF + "test_fuse_overwrite_and_quiet",),
    ("fuse", "--quiet"): (
        PROOF + "test_fuse_overwrite_and_quiet",
        PROOF + "test_fuse_quiet_hides_the_training_log",
        PROOF + "test_quiet_silences_the_summary",
    ),
    # -- retrieve --------------------------------------------------------------------------------------
    ("retrieve", "--index"): ("tests/test_retrieve_cli.py::test_text_query_ranks_images_like_brute_force",),
    ("retrieve", "--query"): ("tests/test_retrieve_cli.py::test_text_query_ranks_images_like_brute_force",),
    ("retrieve", "--query-image"): (
        "tests/test_retrieve_cli.py::test_image_to_image_excludes_itself_and_image_to_text",
    ),
    ("retrieve", "--queries"): (
        "tests/test_retrieve_cli.py::test_feature_set_queries_and_metadata",
        "tests/test_retrieve_cli.py::test_stdin_queries_and_errors",
    ),
    ("retrieve", "--top-k"): ("tests/test_retrieve_cli.py::test_text_query_ranks_images_like_brute_force",),
    ("retrieve", "--threshold"): (PROOF + "test_retrieve_threshold_drops_lower_hits",),
    ("retrieve", "--exclude-self"): (
        "tests/test_retrieve_cli.py::test_image_to_image_excludes_itself_and_image_to_text",
        "tests/test_ann.py::test_index_build_and_retrieve_with_faiss",
    ),
    ("retrieve", "--with-metadata"): (
        PROOF + "test_retrieve_with_metadata_adds_record_keys",
        "tests/test_retrieve_cli.py::test_feature_set_queries_and_metadata",
    ),
    ("retrieve", "--ann"): ("tests/test_search.py::test_retrieve_cli_ann_paths",),
    ("retrieve", "--save-index"): ("tests/test_search.py::test_retrieve_cli_ann_paths",),
    ("retrieve", "--nprobe"): ("tests/test_search.py::test_retrieve_cli_ann_paths",),
    ("retrieve", "--ef"): (
        PROOF + "test_retrieve_ef_widens_the_hnsw_search",
        "tests/test_search.py::test_retrieve_cli_ann_paths",
    ),
    ("retrieve", "--output"): (PROOF + "test_retrieve_output_and_overwrite",),
    ("retrieve", "--model"): (PROOF + "test_retrieve_model_embeds_the_queries",),
    ("retrieve", "--batch-size"): (PROOF + "test_retrieve_batch_size_is_the_queries_per_model_call",),
    ("retrieve", "--device"): (PROOF + "test_device_reaches_the_loader_and_an_absent_gpu_is_refused", NO_GPU),
    ("retrieve", "--dtype"): (PROOF + "test_dtype_reaches_the_loader",),
    ("retrieve", "--overwrite"): (PROOF + "test_retrieve_output_and_overwrite",),
    ("retrieve", "--trust-remote-code"): (PROOF + "test_trust_remote_code_reaches_the_config_loader",),
    ("retrieve", "--quiet"): (PROOF + "test_retrieve_quiet_silences_the_summary",),
    # -- report ----------------------------------------------------------------------------------------
    ("report", "--output"): (
        "tests/test_report.py::test_retrieve_report_shows_every_query_with_its_ranked_hits",
        "tests/test_report.py::test_stdin_to_stdout_and_overwrite",
    ),
    ("report", "--contact-sheet"): ("tests/test_report.py::test_contact_sheet_is_a_grid_of_labelled_thumbnails",),
    ("report", "--link-images"): ("tests/test_report.py::test_link_images_writes_relative_links_that_resolve",),
    ("report", "--thumb-size"): (
        "tests/test_report.py::test_thumb_size_bounds_every_thumbnail",
        "tests/test_report.py::test_contact_sheet_is_a_grid_of_labelled_thumbnails",
    ),
    ("report", "--metric"): ("tests/test_report.py::test_evaluate_report_has_metric_table_histogram_and_extremes",),
    ("report", "--title"): (
        "tests/test_report.py::test_retrieve_report_shows_every_query_with_its_ranked_hits",
        "tests/test_report.py::test_stdin_to_stdout_and_overwrite",
    ),
    ("report", "--max-pixels"): (
        "tests/test_report.py::test_missing_and_undecodable_images_are_placeholders_and_counted",
    ),
    ("report", "--overwrite"): ("tests/test_report.py::test_stdin_to_stdout_and_overwrite",),
    ("report", "--quiet"): ("tests/test_report.py::test_stdin_to_stdout_and_overwrite",),
    # -- serve -----------------------------------------------------------------------------------------
    ("serve", "--index"): ("tests/test_serve.py::test_serve_command_flags_reach_the_server",),
    ("serve", "--host"): (
        "tests/test_serve.py::test_serve_command_warns_for_a_public_host_and_refuses_a_busy_port",
        "tests/test_serve.py::test_host_warning_for_anything_but_loopback",
        "NOTE: the tests never listen on a non-loopback address; the CLI test observes the host reaching the "
        "listener and the warning, with the socket itself bound to 127.0.0.1",
    ),
    ("serve", "--port"): (
        "tests/test_serve.py::test_serve_command_flags_reach_the_server",
        "tests/test_serve.py::test_serve_command_warns_for_a_public_host_and_refuses_a_busy_port",
    ),
    ("serve", "--max-batch"): (
        "tests/test_serve.py::test_serve_command_flags_reach_the_server",
        "tests/test_serve.py::test_concurrent_queries_share_model_calls_unless_batching_is_off",
    ),
    ("serve", "--linger-ms"): (
        "tests/test_serve.py::test_serve_command_flags_reach_the_server",
        "tests/test_serve.py::test_concurrent_queries_share_model_calls_unless_batching_is_off",
        "NOTE: the wait itself is timing; the tests observe the setting reaching the model worker and the "
        "batches a long linger gathers, not a latency",
    ),
    ("serve", "--max-upload-mb"): (
        "tests/test_serve.py::test_serve_command_flags_reach_the_server",
        "tests/test_serve.py::test_oversized_upload_is_413",
    ),
    ("serve", "--max-upload-megapixels"): (
        "tests/test_serve.py::test_serve_command_flags_reach_the_server",
        "tests/test_serve.py::test_malformed_uploads_get_a_4xx_json_error",
    ),
    ("serve", "--allow-host"): (
        "tests/test_serve.py::test_serve_command_flags_reach_the_server",
        "tests/test_serve.py::test_foreign_host_names_are_refused_on_every_route",
    ),
    ("serve", "--model"): ("tests/test_serve.py::test_serve_command_flags_reach_the_server",),
    ("serve", "--device"): ("tests/test_serve.py::test_serve_device_and_dtype_reach_the_loader", NO_GPU),
    ("serve", "--dtype"): ("tests/test_serve.py::test_serve_device_and_dtype_reach_the_loader",),
    ("serve", "--quiet"): ("tests/test_serve.py::test_serve_command_flags_reach_the_server",),
    # -- train caption ---------------------------------------------------------------------------------
    ("train caption", "--train"): (
        "tests/test_train_caption.py::test_training_from_scratch_learns_to_caption_unseen_pictures",
        "tests/test_train_caption.py::test_bad_inputs_are_clear_errors_before_training",
    ),
    ("train caption", "--output"): (
        "tests/test_train_caption.py::test_training_from_scratch_learns_to_caption_unseen_pictures",
    ),
    ("train caption", "--val"): (
        "tests/test_train_caption.py::test_training_from_scratch_learns_to_caption_unseen_pictures",
        "tests/test_train_caption.py::test_bad_inputs_are_clear_errors_before_training",
    ),
    ("train caption", "--val-fraction"): ("tests/test_train_caption.py::test_lengths_and_val_fraction",),
    ("train caption", "--model"): (
        "tests/test_train_caption.py::test_training_from_scratch_learns_to_caption_unseen_pictures",
        "tests/test_train_caption.py::test_bad_inputs_are_clear_errors_before_training",
    ),
    ("train caption", "--image-column"): ("tests/test_train_caption.py::test_parquet_columns_and_trust_remote_code",),
    ("train caption", "--text-column"): ("tests/test_train_caption.py::test_parquet_columns_and_trust_remote_code",),
    ("train caption", "--id-column"): ("tests/test_train_caption.py::test_parquet_columns_and_trust_remote_code",),
    ("train caption", "--epochs"): (
        "tests/test_train_caption.py::test_training_from_scratch_learns_to_caption_unseen_pictures",
        "tests/test_train_caption.py::test_schedule_flags_reach_the_loop",
    ),
    ("train caption", "--batch-size"): (
        "tests/test_train_caption.py::test_training_from_scratch_learns_to_caption_unseen_pictures",
        "tests/test_train_caption.py::test_schedule_flags_reach_the_loop",
    ),
    ("train caption", "--lr"): (
        "tests/test_train_caption.py::test_schedule_flags_reach_the_loop",
        "tests/test_train_caption.py::test_patience_stops_when_cider_does_not_improve",
    ),
    ("train caption", "--grad-accum"): ("tests/test_train_caption.py::test_schedule_flags_reach_the_loop",),
    ("train caption", "--warmup"): ("tests/test_train_caption.py::test_schedule_flags_reach_the_loop",),
    ("train caption", "--weight-decay"): (
        "tests/test_train_caption.py::test_weight_decay_and_seed_change_the_weights",
    ),
    ("train caption", "--freeze-vision"): ("tests/test_train_caption.py::test_freeze_vision_keeps_the_vision_tower",),
    ("train caption", "--lora-rank"): (
        "tests/test_train_caption.py::test_lora_adapters_are_saved_and_the_merged_model_captions",
    ),
    ("train caption", "--max-length"): ("tests/test_train_caption.py::test_lengths_and_val_fraction",),
    ("train caption", "--seed"): ("tests/test_train_caption.py::test_weight_decay_and_seed_change_the_weights",),
    ("train caption", "--patience"): ("tests/test_train_caption.py::test_patience_stops_when_cider_does_not_improve",),
    ("train caption", "--max-new-tokens"): ("tests/test_train_caption.py::test_lengths_and_val_fraction",),
    ("train caption", "--save-every"): (
        "tests/test_train_caption.py::test_kill_9_mid_epoch_then_the_same_command_ends_with_the_uninterrupted_weights",
    ),
    ("train caption", "--max-pixels"): ("tests/test_train_caption.py::test_device_dtype_quiet_and_max_pixels",),
    ("train caption", "--device"): (
        "tests/test_train_caption.py::test_device_dtype_quiet_and_max_pixels",
        NO_GPU,
    ),
    ("train caption", "--dtype"): ("tests/test_train_caption.py::test_device_dtype_quiet_and_max_pixels",),
    ("train caption", "--trust-remote-code"): (
        "tests/test_train_caption.py::test_parquet_columns_and_trust_remote_code",
    ),
    ("train caption", "--overwrite"): (
        "tests/test_train_caption.py::test_other_settings_do_not_resume_and_a_finished_folder_is_kept",
    ),
    ("train caption", "--restart"): (
        "tests/test_train_caption.py::test_other_settings_do_not_resume_and_a_finished_folder_is_kept",
    ),
    ("train caption", "--quiet"): ("tests/test_train_caption.py::test_device_dtype_quiet_and_max_pixels",),
    # -- index build -----------------------------------------------------------------------------------
    # -- warm -------------------------------------------------------------------------------------------
    ("warm start", "--idle"): ("tests/test_warm.py::test_an_idle_warm_process_leaves_on_time",),
    ("warm start", "--max-models"): (
        "tests/test_warm.py::test_models_stay_loaded_and_the_least_recently_used_goes_first",
    ),
    ("warm start", "--max-memory"): ("tests/test_warm.py::test_models_beyond_the_memory_bound_are_not_kept",),
    ("warm start", "--foreground"): (
        "tests/test_warm.py::test_foreground_serves_in_the_terminal_until_ctrl_c_and_quiet_says_nothing",
    ),
    ("warm start", "--quiet"): (
        "tests/test_warm.py::test_foreground_serves_in_the_terminal_until_ctrl_c_and_quiet_says_nothing",
    ),
    ("warm status", "--json"): ("tests/test_warm.py::test_models_stay_loaded_and_the_least_recently_used_goes_first",),
    ("warm stop", "--quiet"): (
        "tests/test_warm.py::test_foreground_serves_in_the_terminal_until_ctrl_c_and_quiet_says_nothing",
    ),
    ("index build", "--kind"): (PROOF + "test_index_build_kind_nlist_m_and_overwrite",),
    ("index build", "--nlist"): (PROOF + "test_index_build_kind_nlist_m_and_overwrite",),
    ("index build", "--m"): (PROOF + "test_index_build_kind_nlist_m_and_overwrite",),
    ("index build", "--overwrite"): (
        PROOF + "test_index_build_kind_nlist_m_and_overwrite",
        "tests/test_ann.py::test_index_build_and_retrieve_with_faiss",
    ),
    ("index build", "--quiet"): (PROOF + "test_quiet_silences_the_summary",),
    # -- evaluate captions -----------------------------------------------------------------------------
    ("evaluate captions", "--pred"): ("tests/test_evaluate_cli.py::test_caption_metrics_without_java",),
    ("evaluate captions", "--refs"): ("tests/test_evaluate_cli.py::test_caption_metrics_without_java",),
    ("evaluate captions", "--metrics"): (PROOF + "test_evaluate_captions_metrics_chooses_the_metrics",),
    ("evaluate captions", "--per-item"): ("tests/test_evaluate_cli.py::test_caption_metrics_without_java",),
    ("evaluate captions", "--video"): (
        "tests/test_evaluate_defects.py::test_video_segments_are_scored_by_their_own_ids",
    ),
    ("evaluate captions", "--clipscore"): ("tests/test_evaluate_cli.py::test_clipscore_matches_the_formula",),
    ("evaluate captions", "--images"): ("tests/test_evaluate_cli.py::test_clipscore_matches_the_formula",),
    ("evaluate captions", "--model"): ("tests/test_evaluate_cli.py::test_clipscore_matches_the_formula",),
    ("evaluate captions", "--device"): (
        PROOF + "test_device_reaches_the_loader_and_an_absent_gpu_is_refused",
        NO_GPU,
    ),
    ("evaluate captions", "--dtype"): (PROOF + "test_dtype_reaches_the_loader",),
    ("evaluate captions", "--format"): (PROOF + "test_evaluate_strict_quiet_and_format",),
    ("evaluate captions", "--strict"): (PROOF + "test_evaluate_strict_quiet_and_format",),
    ("evaluate captions", "--overwrite"): (PROOF + "test_evaluate_overwrite_replaces_the_written_file",),
    ("evaluate captions", "--quiet"): (PROOF + "test_evaluate_strict_quiet_and_format",),
    # -- evaluate retrieval ----------------------------------------------------------------------------
    ("evaluate retrieval", "--results"): ("tests/test_evaluate_cli.py::test_retrieval_metrics_from_retrieve_output",),
    ("evaluate retrieval", "--qrels"): ("tests/test_evaluate_cli.py::test_retrieval_metrics_from_retrieve_output",),
    ("evaluate retrieval", "--images"): ("tests/test_evaluate_cli.py::test_cross_modal_protocol_from_feature_sets",),
    ("evaluate retrieval", "--texts"): ("tests/test_evaluate_cli.py::test_cross_modal_protocol_from_feature_sets",),
    ("evaluate retrieval", "--match-field"): (PROOF + "test_evaluate_retrieval_match_field_names_the_owner_field",),
    ("evaluate retrieval", "--top-k"): ("tests/test_evaluate_cli.py::test_retrieval_metrics_from_retrieve_output",),
    ("evaluate retrieval", "--format"): (PROOF + "test_evaluate_strict_quiet_and_format",),
    ("evaluate retrieval", "--strict"): (PROOF + "test_evaluate_strict_quiet_and_format",),
    ("evaluate retrieval", "--quiet"): (PROOF + "test_evaluate_strict_quiet_and_format",),
    # -- evaluate classification -----------------------------------------------------------------------
    ("evaluate classification", "--pred"): (
        "tests/test_evaluate_cli.py::test_classification_metrics_and_confusion_csv",
    ),
    ("evaluate classification", "--truth"): (
        "tests/test_evaluate_cli.py::test_classification_metrics_and_confusion_csv",
    ),
    ("evaluate classification", "--top-k"): (
        "tests/test_evaluate_cli.py::test_classification_metrics_and_confusion_csv",
    ),
    ("evaluate classification", "--confusion"): (
        "tests/test_evaluate_cli.py::test_classification_metrics_and_confusion_csv",
    ),
    ("evaluate classification", "--format"): (PROOF + "test_evaluate_strict_quiet_and_format",),
    ("evaluate classification", "--strict"): (
        "tests/test_evaluate_cli.py::test_classification_metrics_and_confusion_csv",
        PROOF + "test_evaluate_strict_quiet_and_format",
    ),
    ("evaluate classification", "--overwrite"): (PROOF + "test_evaluate_overwrite_replaces_the_written_file",),
    ("evaluate classification", "--quiet"): (PROOF + "test_evaluate_strict_quiet_and_format",),
    # -- evaluate detection ----------------------------------------------------------------------------
    ("evaluate detection", "--pred"): (
        "tests/test_evaluate_detection.py::test_metrics_equal_cocoeval_on_the_same_detections",
    ),
    ("evaluate detection", "--truth"): (
        "tests/test_evaluate_detection.py::test_metrics_equal_cocoeval_on_the_same_detections",
    ),
    ("evaluate detection", "--format"): (
        "tests/test_evaluate_detection.py::test_metrics_equal_cocoeval_on_the_same_detections",
    ),
    ("evaluate detection", "--strict"): ("tests/test_evaluate_detection.py::test_notes_and_refusals",),
    ("evaluate detection", "--quiet"): ("tests/test_evaluate_detection.py::test_notes_and_refusals",),
}

REASONS = ("NOTE:", "UNTESTABLE:", "BUG:")


def app_options() -> set[tuple[str, str]]:
    """Every (command path, long option) of the mmcli app, groups walked; ``--help`` left out."""
    import typer

    from mmcli.cli import app

    found: set[tuple[str, str]] = set()

    def walk(command, path: list[str]) -> None:
        for param in command.params:
            if param.param_type_name != "option":
                continue
            long = [name for name in param.opts if name.startswith("--")]
            assert long, f"{' '.join(path) or 'mmcli'}: option {param.opts} has no long name"
            if long[0] != "--help":
                found.add((" ".join(path), long[0]))
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return found


def describe(pair: tuple[str, str]) -> str:
    command, option = pair
    return f"mmcli {command} {option}".replace("  ", " ")


@cache
def defined_tests(relative: str) -> frozenset[str]:
    """The ``test_*`` functions defined at the top of a test module (parsed, not imported)."""
    path = TESTS.parent / relative
    if not path.is_file():
        return frozenset()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return frozenset(node.name for node in tree.body if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef))


def test_every_option_has_an_entry():
    missing = sorted(app_options() - set(PROOFS))
    assert not missing, "options with no proof in PROOFS: " + ", ".join(map(describe, missing))


def test_no_entry_names_an_option_the_app_lacks():
    stale = sorted(set(PROOFS) - app_options())
    assert not stale, "PROOFS names options the app no longer has: " + ", ".join(map(describe, stale))


@pytest.mark.parametrize("pair", sorted(PROOFS), ids=describe)
def test_entry_names_existing_tests_or_a_reason(pair):
    entry = PROOFS[pair]
    tests = [ref for ref in entry if not ref.startswith(REASONS)]
    reasons = [ref for ref in entry if ref.startswith(REASONS)]
    assert tests or any(r.startswith(("UNTESTABLE:", "BUG:")) for r in reasons), (
        f"{describe(pair)}: give a proving test, or UNTESTABLE:/BUG: with the reason"
    )
    for reason in reasons:
        assert len(reason.split(":", 1)[1].strip()) > 10, f"{describe(pair)}: say why, not just {reason!r}"
    for ref in tests:
        module, sep, name = ref.partition("::")
        assert sep and module.startswith("tests/") and name.startswith("test_"), f"{describe(pair)}: bad ref {ref!r}"
        assert (TESTS.parent / module).is_file(), f"{describe(pair)}: {module} does not exist"
        assert name in defined_tests(module), f"{describe(pair)}: {module} defines no {name}"
