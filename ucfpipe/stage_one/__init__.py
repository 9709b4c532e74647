"""Stage one: videos -> cached features (extract, merge of parts, check, finetune). Never imports stage_two."""
