"""Policy files: the language SREs use to say what healer repairs, and when.

``model`` defines the language, ``loader`` reads files with exact error
positions, ``evaluate`` turns policies and a snapshot into proposals for the
guard, ``schema`` exports the JSON Schema for editors.
"""
